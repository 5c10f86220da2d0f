//! Configuration: `config.toml`, then `.env` and environment overrides, then
//! validation into typed settings.
//!
//! Every key of SPEC §2 is read here and nowhere else, and written once, in
//! `sections.rs`'s table: its type, default, kind and environment variable.
//! The file is read by serde into sections that refuse unknown keys
//! (`deny_unknown_fields`), each value through a newtype that validates it
//! (`values.rs`). A bad value is a [`ConfigError`] that names the key (and
//! the variable, for an override); with several, the first in the file.
//! Secrets (the bot token) live in [`Secret`], whose `Debug` and `Display`
//! are masked.

mod sections;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use sections::{
    Config, DatabaseConfig, DiscordConfig, HttpConfig, KeysConfig, LeaksConfig, LogConfig, RobloxConfig, RunConfig,
    SecretsConfig, UsageConfig, WebhooksConfig, BLOXLINK_BASE_URL, GITHUB_PUBLIC_KEYS_URL, OPEN_CLOUD_BASE_URL,
    ROVER_BASE_URL,
};

/// The default Discord REST base. Any other base is a proxy or a test double.
pub const DISCORD_API_DEFAULT: &str = "https://discord.com";

/// Which parts of the application a `guildkey run` process runs, so an
/// operator can run several listeners and one bot on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// The HTTP listener and the gateway bot (the default).
    Both,
    /// The HTTP listener alone: no gateway connection; guild facts from
    /// Discord's REST API, cached briefly.
    Http,
    /// The gateway bot and the audit-channel posts alone: no listener.
    Bot,
}

impl ProcessRole {
    pub fn runs_http(self) -> bool {
        matches!(self, Self::Both | Self::Http)
    }

    pub fn runs_bot(self) -> bool {
        matches!(self, Self::Both | Self::Bot)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::Http => "http",
            Self::Bot => "bot",
        }
    }
}

impl std::str::FromStr for ProcessRole {
    type Err = String;

    /// `http`, `bot` or `both`, as `--only`, `run.only` and `GUILDKEY_ONLY` take it.
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim() {
            "both" => Ok(Self::Both),
            "http" => Ok(Self::Http),
            "bot" => Ok(Self::Bot),
            other => {
                let shown: String = other.chars().take(50).collect();
                Err(format!("'{shown}' is not http (the listener alone), bot (the bot alone) or both"))
            }
        }
    }
}

/// The gateway shard count: Discord's recommendation (`GET /gateway/bot`)
/// or a number. Discord refuses a bot in more than 2,500 guilds per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    Auto,
    Count(u32),
}

/// The most shards guildkey accepts (Discord's largest bots run thousands;
/// this bounds a typo, not a real deployment).
pub const MAX_SHARDS: u32 = 65_536;

/// Where slash commands are registered at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterCommands {
    Global,
    Guild(u64),
    None,
}

/// The default waits between a webhook message's attempts: 8 attempts over
/// about 17.6 hours.
pub const DEFAULT_RETRY_DELAYS_SECONDS: [u64; 7] = [5, 60, 300, 1800, 7200, 18_000, 36_000];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret string: printed as `********`, never in full.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******** (set)")
    }
}

/// A configuration problem, in one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// Control characters from the operator's text (a `\n` escape in a TOML
    /// string, a stray `\r` in an environment value) are shown escaped, so
    /// the error stays one line.
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: escape_controls(&key.into()), message: escape_controls(&message.into()) }
    }
}

fn escape_controls(s: &str) -> String {
    if !s.contains(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Where the config file comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `--config PATH` or `GUILDKEY_CONFIG`: the file must exist.
    Explicit(PathBuf),
    /// `./config.toml`: used if present, built-in defaults if not.
    Default,
}

impl ConfigSource {
    pub fn from_arg(path: Option<PathBuf>) -> Self {
        path.map_or(Self::Default, Self::Explicit)
    }

    /// The file [`Config::load`] reads, if any, as an absolute path where it
    /// can be made one (for `config check` to name).
    pub fn file(&self) -> Option<PathBuf> {
        let path = match self {
            Self::Explicit(path) => path.clone(),
            Self::Default => Some(PathBuf::from("config.toml")).filter(|p| p.exists())?,
        };
        Some(std::path::absolute(&path).unwrap_or(path))
    }
}

impl Config {
    /// Loads `.env`, the file and the environment, in that order of
    /// precedence from lowest to highest.
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is the operator's to fix.
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                return Err(ConfigError::new(".env", one_line(&e.to_string())));
            }
        }
        let text = match source {
            ConfigSource::Explicit(path) => Some(read_file(path)?),
            ConfigSource::Default => {
                let path = Path::new("config.toml");
                path.exists().then(|| read_file(path)).transpose()?
            }
        };
        Self::from_parts(text.as_deref(), &|name| std::env::var(name).ok())
    }

    /// Builds a config from the file's text and an environment lookup.
    pub fn from_parts(text: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg = Config::default();
        let text = text.unwrap_or_default();
        // Parsed once for its syntax alone, so a syntax error reads the same
        // whatever the document holds; then read by serde from the text (a
        // TOML date stays a date there, not text).
        text.parse::<toml::Table>().map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            ConfigError::new("config file", format!("not valid TOML{at}: {}", one_line(e.message())))
        })?;
        let file: sections::File =
            serde_path_to_error::deserialize(toml::de::Deserializer::new(text)).map_err(file_error)?;
        file.apply(&mut cfg);
        if u64::from(cfg.usage.hour_retention_days) * 24 < u64::from(cfg.usage.minute_retention_hours) {
            return Err(ConfigError::new(
                "usage.hour_retention_days",
                format!(
                    "{} days is shorter than usage.minute_retention_hours ({} hours); hour buckets must outlive minutes",
                    cfg.usage.hour_retention_days, cfg.usage.minute_retention_hours
                ),
            ));
        }

        // Environment overrides, each named in its error.
        sections::apply_env(&mut cfg, &|name| env(name).filter(|v| !v.is_empty()))?;
        if let Some((first, last)) = cfg.discord.shard_ids {
            match cfg.discord.shards {
                Shards::Auto => {
                    return Err(ConfigError::new(
                        "discord.shard_ids",
                        "needs discord.shards set to a number: every process must agree on the total",
                    ))
                }
                Shards::Count(n) if last >= n => {
                    return Err(ConfigError::new(
                        "discord.shard_ids",
                        format!("{first}-{last} is outside the {n} shards of discord.shards (ids 0 to {})", n - 1),
                    ))
                }
                Shards::Count(_) => {}
            }
        }
        if let Some(token) = &cfg.discord.token {
            if token.expose().trim().is_empty() {
                return Err(ConfigError::new(
                    "discord.token",
                    "the bot token is empty; set DISCORD_TOKEN or leave the key out",
                ));
            }
            if token.expose().chars().any(char::is_whitespace) {
                return Err(ConfigError::new("discord.token", "the bot token contains white space"));
            }
        }
        Ok(cfg)
    }

    /// True when REST goes to a proxy or a test double rather than Discord.
    pub fn discord_is_proxied(&self) -> bool {
        self.discord.api_base_url != DISCORD_API_DEFAULT
    }

    /// The effective settings, one `key = value` a line, secrets masked.
    pub fn describe(&self) -> String {
        sections::describe(self).join("\n")
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config file", format!("cannot read {}: {e}", path.display())))
}

/// A file error as serde reports it, said as the loader says it: the key
/// (serde's path), then an unknown key, a section that is not a table, or
/// the value's own refusal (from `values`).
fn file_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path: Vec<&str> = e
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let message = e.inner().message();
    // How toml hands serde a date: a table with this one key.
    if let [section, "$__toml_private_datetime"] = path[..] {
        return ConfigError::new(section, "must be a table like [section]");
    }
    let key = path.join(".");
    if message.starts_with("unknown field") {
        ConfigError::new(key, "unknown key")
    } else if path.len() == 1 {
        ConfigError::new(key, "must be a table like [section]")
    } else {
        ConfigError::new(key, message)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
