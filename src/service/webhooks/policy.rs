//! Where a webhook may point: the URL's form, and every address its host
//! is or resolves to public (unless allowed), checked when set and again on
//! every delivery through the client's resolver ([`PublicOnly`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::{ATTEMPT_TIMEOUT, CONNECT_TIMEOUT, MAX_URL_CHARS};
use crate::config::WebhooksConfig;
use crate::keys::InvalidInput;

/// Why an address is no place for a webhook (`None`: a public address).
/// IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4) is judged as IPv4.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    use ipnet::{Ipv4Net, Ipv6Net};
    let v4 = |s: &str| s.parse::<Ipv4Net>().expect("a CIDR");
    let v6 = |s: &str| s.parse::<Ipv6Net>().expect("a CIDR");
    match ip {
        IpAddr::V4(a) => {
            let ranges = [
                ("0.0.0.0/8", "unspecified"),
                ("10.0.0.0/8", "private"),
                ("100.64.0.0/10", "CGNAT (shared)"),
                ("127.0.0.0/8", "loopback"),
                ("169.254.0.0/16", "link-local"),
                ("172.16.0.0/12", "private"),
                ("192.0.0.0/24", "reserved"),
                ("192.0.2.0/24", "documentation"),
                ("192.168.0.0/16", "private"),
                ("198.18.0.0/15", "benchmarking"),
                ("198.51.100.0/24", "documentation"),
                ("203.0.113.0/24", "documentation"),
                ("224.0.0.0/4", "multicast"),
                ("240.0.0.0/4", "reserved"),
            ];
            ranges.into_iter().find(|(net, _)| v4(net).contains(&a)).map(|(_, why)| why)
        }
        IpAddr::V6(a) => {
            if let Some(inner) = a.to_ipv4_mapped() {
                return non_public(IpAddr::V4(inner));
            }
            let seg = a.segments();
            // ::a.b.c.d (deprecated IPv4-compatible), 64:ff9b::a.b.c.d (NAT64), 2002:AABB:CCDD::/48 (6to4).
            let embedded =
                |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            if seg[..6] == [0; 6] && !a.is_unspecified() && !a.is_loopback() {
                return non_public(embedded(seg[6], seg[7]));
            }
            if v6("64:ff9b::/96").contains(&a) {
                return non_public(embedded(seg[6], seg[7]));
            }
            if v6("2002::/16").contains(&a) {
                return non_public(embedded(seg[1], seg[2]));
            }
            let ranges = [
                ("::/128", "unspecified"),
                ("::1/128", "loopback"),
                ("64:ff9b:1::/48", "private (local NAT64)"),
                ("100::/64", "reserved (discard)"),
                ("2001::/23", "reserved"),
                ("2001:db8::/32", "documentation"),
                ("fc00::/7", "unique-local"),
                ("fe80::/10", "link-local"),
                ("fec0::/10", "site-local"),
                ("ff00::/8", "multicast"),
            ];
            ranges.into_iter().find(|(net, _)| v6(net).contains(&a)).map(|(_, why)| why)
        }
    }
}

/// A URL's scheme, host and port, what messages and logs show of it: the
/// path and query of a webhook URL often hold a token of their own.
pub fn origin(url: &reqwest::Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// Checks a webhook URL's form: http(s) as allowed, a host, no user info,
/// no fragment, not too long; and an IP-literal host against the address
/// rules. (A host name is resolved by [`check_url`].)
pub fn parse_url(input: &str, cfg: &WebhooksConfig) -> std::result::Result<reqwest::Url, InvalidInput> {
    let input = input.trim();
    let shown: String = input.chars().filter(|c| !c.is_control()).take(100).collect();
    let bad = |why: &str| InvalidInput::new("url", format!("'{shown}' {why}"));
    if input.chars().count() > MAX_URL_CHARS {
        return Err(InvalidInput::new("url", format!("is longer than {MAX_URL_CHARS} characters")));
    }
    let url =
        reqwest::Url::parse(input).map_err(|e| bad(&format!("is not a URL like https://example.com/hooks ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if cfg.allow_http => {}
        "http" => {
            return Err(bad(
                "is not https; webhooks go over https only (the operator can allow http with webhooks.allow_http)",
            ))
        }
        _ => return Err(bad("is not an https URL like https://example.com/hooks")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "holds a user name or password; put credentials in the path or query, or verify the signature instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("has a #fragment, which is never sent; remove it"));
    }
    if let Some(ip) = ip_host(&url) {
        check_address(ip, cfg).map_err(|why| bad(&why))?;
    }
    Ok(url)
}

/// The URL's host if it is an IP address (the URL parser writes every
/// IPv4 form as dotted decimal, and IPv6 in brackets).
fn ip_host(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn check_address(ip: IpAddr, cfg: &WebhooksConfig) -> std::result::Result<(), String> {
    match non_public(ip) {
        Some(kind) if !cfg.allow_private_addresses => Err(format!(
            "points to {ip}, a {kind} address; webhooks go to public addresses only (the operator can allow \
             private ones with webhooks.allow_private_addresses)"
        )),
        _ => Ok(()),
    }
}

/// [`parse_url`], then the host name resolved and every address it gives
/// checked: the URL is refused if any is not public (unless allowed).
pub async fn check_url(input: &str, cfg: &WebhooksConfig) -> std::result::Result<reqwest::Url, InvalidInput> {
    let url = parse_url(input, cfg)?;
    if ip_host(&url).is_none() {
        let host = url.host_str().unwrap_or_default().to_owned();
        resolve_checked(&host, cfg.allow_private_addresses)
            .await
            .map_err(|why| InvalidInput::new("url", format!("'{}' {why}", origin(&url))))?;
    }
    Ok(url)
}

/// Resolves `host`; refuses it when it resolves to nothing, or (unless
/// `allow_private`) to any address that is not public.
async fn resolve_checked(host: &str, allow_private: bool) -> std::result::Result<Vec<SocketAddr>, String> {
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, 0))).await;
    let addrs: Vec<SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(format!("cannot be resolved ({e})")),
        Err(_) => return Err("cannot be resolved (no answer within 5 s)".to_owned()),
    };
    if addrs.is_empty() {
        return Err("resolves to no address".to_owned());
    }
    if !allow_private {
        if let Some((ip, kind)) = addrs.iter().find_map(|a| non_public(a.ip()).map(|k| (a.ip(), k))) {
            // The refusal reaches server admins, who must not learn what an
            // internal host name resolves to; the operator's log says it.
            tracing::info!(host, address = %ip, kind, "refused a webhook host that resolves to a non-public address");
            return Err("resolves to a non-public address; webhooks go to public addresses only (the operator \
                 can allow private ones with webhooks.allow_private_addresses; the log names the address)"
                .to_owned());
        }
    }
    Ok(addrs)
}

/// The webhook client's resolver: an answer holding a non-public address is
/// refused (unless allowed), so the address checked is the one connected
/// to, whatever DNS said when the webhook was set.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_private).await.map_err(|why| format!("{host} {why}"))?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client every attempt goes through: no redirects, no proxy from the
/// environment, every host name resolved through [`PublicOnly`].
pub(in crate::service) fn client(cfg: &WebhooksConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!cfg.allow_http)
        .user_agent(concat!("guildkey-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PublicOnly { allow_private: cfg.allow_private_addresses }))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow_http: bool, allow_private: bool) -> WebhooksConfig {
        WebhooksConfig {
            allow_http,
            allow_private_addresses: allow_private,
            retry_delays: vec![Duration::from_secs(1)],
            max_pending_per_guild: 1_000,
        }
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip} passed as public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_and_public_unless_allowed() {
        let strict = cfg(false, false);
        assert!(parse_url("https://93.184.216.34/hook?x=1", &strict).is_ok());
        for (url, needle) in [
            ("http://93.184.216.34/hook", "not https"),
            ("ftp://example.com/", "not an https URL"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://example.com/#x", "fragment"),
            ("https://10.0.0.1/hook", "private address"),
            ("https://127.0.0.1:8443/", "loopback address"),
            ("https://[::1]/", "loopback address"),
            ("not a url", "is not a URL"),
        ] {
            let e = parse_url(url, &strict).unwrap_err();
            assert!(e.field == "url" && e.message.contains(needle), "{url}: {}", e.message);
        }
        assert!(parse_url("http://127.0.0.1:9/hook", &cfg(true, true)).is_ok());
    }

    #[tokio::test]
    async fn a_host_name_resolving_to_loopback_is_refused_unless_allowed() {
        let e = check_url("https://localhost/hook", &cfg(false, false)).await.unwrap_err();
        assert!(e.message.contains("resolves to a non-public address"), "{}", e.message);
        assert!(
            !e.message.contains("127.0.0.1") && !e.message.contains("::1"),
            "the address is not named: {}",
            e.message
        );
        assert!(check_url("https://localhost/hook", &cfg(false, true)).await.is_ok());
    }
}
