//! The HTTP client and serenity `Http` for Discord's REST API: rustls with
//! the built-in roots plus `discord.ca_file`, `discord.com` reached at
//! `discord.connect_to` when set, and serenity's ratelimiter on unless
//! `discord.api_base_url` names a proxy (which then owns rate limits).

use crate::config::Config;

/// The client every Discord REST request goes through (serenity's and
/// [`super::SerenityGuildOps`]'s); `Err` says which setting is wrong.
pub fn http_client(config: &Config) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = &config.discord.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("discord.ca_file: cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("discord.ca_file: {} is not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("discord.ca_file: {} holds no certificate", path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(addr) = config.discord.connect_to {
        builder = builder.resolve("discord.com", addr);
    }
    builder.build().map_err(|e| format!("the HTTP client for Discord could not be built: {e}"))
}

/// serenity's `Http` on `client`: through the proxy named by
/// `discord.api_base_url` with the ratelimiter off, else to discord.com
/// with it on.
pub fn serenity_http(config: &Config, token: &str, client: reqwest::Client) -> serenity::all::Http {
    let mut http = serenity::all::HttpBuilder::new(token).client(client);
    if config.discord_is_proxied() {
        http = http.proxy(config.discord.api_base_url.clone()).ratelimiter_disabled(true);
    }
    http.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_stops_the_start_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.discord.ca_file = Some(dir.path().join("missing.pem"));
        assert!(http_client(&config).unwrap_err().starts_with("discord.ca_file: cannot read"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        config.discord.ca_file = Some(junk);
        assert!(http_client(&config).unwrap_err().starts_with("discord.ca_file:"));
        config.discord.ca_file = None;
        config.discord.connect_to = Some("127.0.0.1:8443".parse().unwrap());
        assert!(http_client(&config).is_ok());
    }
}
