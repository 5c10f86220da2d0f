//! Configuration: `config.toml`, then `.env` and environment overrides, then
//! validation into typed settings.
//!
//! Every key of SPEC §2 is read here and nowhere else. A bad value is a
//! [`ConfigError`] that names the key (and the variable, for an override);
//! unknown keys are refused so a typo is not silently ignored. Secrets (the
//! bot token) live in [`Secret`], whose `Debug` and `Display` are masked.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default Discord REST base. Any other base is a proxy or a test double.
pub const DISCORD_API_DEFAULT: &str = "https://discord.com";

#[derive(Debug, Clone)]
pub struct Config {
    pub discord: DiscordConfig,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub keys: KeysConfig,
    pub log: LogConfig,
    pub run: RunConfig,
    pub webhooks: WebhooksConfig,
    pub usage: UsageConfig,
}

/// How long usage counters and the request log are kept
/// (`service::usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageConfig {
    /// Minute buckets are kept this many hours (then only their hours).
    pub minute_retention_hours: u32,
    /// Hour buckets (and requests per IP) are kept this many days.
    pub hour_retention_days: u32,
    /// The newest requests kept in each key's request log; 0 keeps none.
    pub request_log_per_key: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { minute_retention_hours: 48, hour_retention_days: 90, request_log_per_key: 200 }
    }
}

/// What `guildkey run` runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The process's role: the listener, the bot, or both.
    pub only: ProcessRole,
}

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

#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// Required for `run` only; the CLI works without it.
    pub token: Option<Secret>,
    pub api_base_url: String,
    pub register_commands: RegisterCommands,
    /// Invalid answers (401, 403, 429) Discord may give one guild's calls
    /// in 10 minutes before guildkey stops calling Discord for that guild
    /// until the count falls again. Discord cuts the bot off from its API
    /// for every guild after 10,000 from one IP.
    pub invalid_request_budget: u32,
    /// The operator enabled the privileged MESSAGE_CONTENT intent for the
    /// bot: the leak guard then also revokes a key it catches in a message.
    pub message_content_intent: bool,
    /// How many gateway shards the bot runs in all.
    pub shards: Shards,
    /// The shards this process runs, first to last inclusive (`None`: all).
    pub shard_ids: Option<(u32, u32)>,
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

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    pub trust_forwarded_for: bool,
    /// Peers whose `X-Forwarded-For` is believed (with `trust_forwarded_for`);
    /// empty means any peer's, as before this key existed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub max_body_bytes: usize,
}

impl HttpConfig {
    /// Settings that work but are probably not what the operator meant, one
    /// line each (`guildkey config check` prints them, `run` logs them).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.trust_forwarded_for && self.trusted_proxies.is_empty() {
            warnings.push(
                "http.trust_forwarded_for is true but http.trusted_proxies is empty: any client can choose its IP \
                 with X-Forwarded-For; list your reverse proxies in http.trusted_proxies"
                    .to_owned(),
            );
        }
        if !self.trust_forwarded_for && !self.trusted_proxies.is_empty() {
            warnings.push(
                "http.trusted_proxies is set but http.trust_forwarded_for is false: X-Forwarded-For is ignored"
                    .to_owned(),
            );
        }
        warnings
    }
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub max_per_guild: u32,
    pub prefix: String,
    pub default_rate_limit_per_minute: u32,
    pub last_used_flush_seconds: u64,
    /// Bans a key may make in 10 minutes before the breaker suspends it,
    /// unless the key sets its own.
    pub default_ban_budget: u32,
    /// Role changes likewise.
    pub default_role_budget: u32,
    /// How often the upkeep looks for keys whose expiry reminder is due
    /// (`keys.expiry_check_seconds`).
    pub expiry_check_seconds: u64,
}

/// Where webhooks may point and how their deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// Accept `http://` webhook URLs (only `https://` otherwise).
    pub allow_http: bool,
    /// Accept webhook URLs whose host is (or resolves to) a private,
    /// loopback, link-local, unique-local, CGNAT or unspecified address:
    /// for a receiver on the operator's own network. Off, such a URL is
    /// refused when set and again at every delivery (DNS can change).
    pub allow_private_addresses: bool,
    /// The wait after each failed attempt before the next; a message is
    /// given up once they are used up.
    pub retry_delays: Vec<std::time::Duration>,
}

/// The default waits between a webhook message's attempts: 8 attempts over
/// about 17.6 hours.
pub const DEFAULT_RETRY_DELAYS_SECONDS: [u64; 7] = [5, 60, 300, 1800, 7200, 18_000, 36_000];

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

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
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: escape_controls(&key.into()), message: escape_controls(&message.into()) }
    }
}

fn escape_controls(s: &str) -> String {
    if !s.contains(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            discord: DiscordConfig {
                token: None,
                api_base_url: DISCORD_API_DEFAULT.to_owned(),
                register_commands: RegisterCommands::Global,
                invalid_request_budget: 50,
                message_content_intent: false,
                shards: Shards::Auto,
                shard_ids: None,
            },
            database: DatabaseConfig { url: "sqlite://data/guildkey.db?mode=rwc".to_owned() },
            http: HttpConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
                trust_forwarded_for: false,
                trusted_proxies: Vec::new(),
                max_body_bytes: 16_384,
            },
            keys: KeysConfig {
                max_per_guild: 3,
                prefix: "gk".to_owned(),
                default_rate_limit_per_minute: 60,
                last_used_flush_seconds: 5,
                default_ban_budget: 30,
                default_role_budget: 300,
                expiry_check_seconds: 60,
            },
            log: LogConfig { format: LogFormat::Pretty },
            run: RunConfig { only: ProcessRole::Both },
            webhooks: WebhooksConfig {
                allow_http: false,
                allow_private_addresses: false,
                retry_delays: DEFAULT_RETRY_DELAYS_SECONDS.map(std::time::Duration::from_secs).to_vec(),
            },
            usage: UsageConfig::default(),
        }
    }
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
        let mut table = match text {
            Some(text) => text.parse::<toml::Table>().map_err(|e| {
                let line = e.span().map(|s| text[..s.start].lines().count().max(1));
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                ConfigError::new("config file", format!("not valid TOML{at}: {}", one_line(e.message())))
            })?,
            None => toml::Table::new(),
        };
        let mut file = FileReader { table: &mut table };

        if let Some(v) = file.string("discord", "token")? {
            cfg.discord.token = Some(Secret::new(v));
        }
        if let Some(v) = file.string("discord", "api_base_url")? {
            cfg.discord.api_base_url = parse_base_url("discord.api_base_url", &v)?;
        }
        if let Some(v) = file.string("discord", "register_commands")? {
            cfg.discord.register_commands = parse_register("discord.register_commands", &v)?;
        }
        if let Some(v) = file.integer("discord", "invalid_request_budget", 1, 5000)? {
            cfg.discord.invalid_request_budget = v as u32;
        }
        if let Some(v) = file.bool("discord", "message_content_intent")? {
            cfg.discord.message_content_intent = v;
        }
        if let Some(v) = file.string_or_integer("discord", "shards")? {
            cfg.discord.shards = parse_shards("discord.shards", &v)?;
        }
        if let Some(v) = file.string_or_integer("discord", "shard_ids")? {
            cfg.discord.shard_ids = Some(parse_shard_ids("discord.shard_ids", &v)?);
        }
        if let Some(v) = file.string("database", "url")? {
            cfg.database.url = parse_db_url("database.url", &v)?;
        }
        if let Some(v) = file.string("http", "bind")? {
            cfg.http.bind = parse_bind("http.bind", &v)?;
        }
        if let Some(v) = file.bool("http", "trust_forwarded_for")? {
            cfg.http.trust_forwarded_for = v;
        }
        if let Some(v) = file.string_list("http", "trusted_proxies")? {
            cfg.http.trusted_proxies = parse_cidrs("http.trusted_proxies", &v)?;
        }
        if let Some(v) = file.integer("http", "max_body_bytes", 1, 64 * 1024 * 1024)? {
            cfg.http.max_body_bytes = v as usize;
        }
        if let Some(v) = file.integer("keys", "max_per_guild", 1, 1000)? {
            cfg.keys.max_per_guild = v as u32;
        }
        if let Some(v) = file.string("keys", "prefix")? {
            cfg.keys.prefix = parse_prefix("keys.prefix", &v)?;
        }
        if let Some(v) = file.integer("keys", "default_rate_limit_per_minute", 1, 100_000)? {
            cfg.keys.default_rate_limit_per_minute = v as u32;
        }
        if let Some(v) = file.integer("keys", "last_used_flush_seconds", 1, 3600)? {
            cfg.keys.last_used_flush_seconds = v as u64;
        }
        if let Some(v) = file.integer("keys", "default_ban_budget", 1, 10_000)? {
            cfg.keys.default_ban_budget = v as u32;
        }
        if let Some(v) = file.integer("keys", "default_role_budget", 1, 10_000)? {
            cfg.keys.default_role_budget = v as u32;
        }
        if let Some(v) = file.integer("keys", "expiry_check_seconds", 1, 3600)? {
            cfg.keys.expiry_check_seconds = v as u64;
        }
        if let Some(v) = file.string("log", "format")? {
            cfg.log.format = parse_log_format("log.format", &v)?;
        }
        if let Some(v) = file.string("run", "only")? {
            cfg.run.only = parse_role("run.only", &v)?;
        }
        if let Some(v) = file.bool("webhooks", "allow_http")? {
            cfg.webhooks.allow_http = v;
        }
        if let Some(v) = file.bool("webhooks", "allow_private_addresses")? {
            cfg.webhooks.allow_private_addresses = v;
        }
        if let Some(v) = file.string_list("webhooks", "retry_delays")? {
            cfg.webhooks.retry_delays = parse_retry_delays("webhooks.retry_delays", &v)?;
        }
        if let Some(v) = file.integer("usage", "minute_retention_hours", 2, 24 * 31)? {
            cfg.usage.minute_retention_hours = v as u32;
        }
        if let Some(v) = file.integer("usage", "hour_retention_days", 1, 3660)? {
            cfg.usage.hour_retention_days = v as u32;
        }
        if let Some(v) = file.integer("usage", "request_log_per_key", 0, 100_000)? {
            cfg.usage.request_log_per_key = v as u32;
        }
        if u64::from(cfg.usage.hour_retention_days) * 24 < u64::from(cfg.usage.minute_retention_hours) {
            return Err(ConfigError::new(
                "usage.hour_retention_days",
                format!(
                    "{} days is shorter than usage.minute_retention_hours ({} hours); hour buckets must outlive minutes",
                    cfg.usage.hour_retention_days, cfg.usage.minute_retention_hours
                ),
            ));
        }
        file.reject_unknown()?;

        // Environment overrides, each named in its error.
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = var("DISCORD_TOKEN") {
            cfg.discord.token = Some(Secret::new(v));
        }
        if let Some(v) = var("DISCORD_API_BASE_URL") {
            cfg.discord.api_base_url = parse_base_url("DISCORD_API_BASE_URL (discord.api_base_url)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_REGISTER_COMMANDS") {
            cfg.discord.register_commands =
                parse_register("GUILDKEY_REGISTER_COMMANDS (discord.register_commands)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_SHARDS") {
            cfg.discord.shards = parse_shards("GUILDKEY_SHARDS (discord.shards)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_SHARD_IDS") {
            cfg.discord.shard_ids = Some(parse_shard_ids("GUILDKEY_SHARD_IDS (discord.shard_ids)", &v)?);
        }
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
        if let Some(v) = var("DATABASE_URL") {
            cfg.database.url = parse_db_url("DATABASE_URL (database.url)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_HTTP_BIND") {
            cfg.http.bind = parse_bind("GUILDKEY_HTTP_BIND (http.bind)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_HTTP_TRUSTED_PROXIES") {
            cfg.http.trusted_proxies = parse_cidrs("GUILDKEY_HTTP_TRUSTED_PROXIES (http.trusted_proxies)", &[v])?;
        }
        if let Some(v) = var("GUILDKEY_LOG_FORMAT") {
            cfg.log.format = parse_log_format("GUILDKEY_LOG_FORMAT (log.format)", &v)?;
        }
        if let Some(v) = var("GUILDKEY_ONLY") {
            cfg.run.only = parse_role("GUILDKEY_ONLY (run.only)", &v)?;
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
        let token = match &self.discord.token {
            Some(t) => t.to_string(),
            None => "(not set; required for `guildkey run`)".to_owned(),
        };
        let register = match self.discord.register_commands {
            RegisterCommands::Global => "global".to_owned(),
            RegisterCommands::Guild(id) => format!("guild:{id}"),
            RegisterCommands::None => "none".to_owned(),
        };
        let proxies = match &self.http.trusted_proxies[..] {
            [] => "(none)".to_owned(),
            nets => nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        };
        let format = match self.log.format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        [
            format!("discord.token = {token}"),
            format!("discord.api_base_url = {}", self.discord.api_base_url),
            format!("discord.register_commands = {register}"),
            format!("discord.invalid_request_budget = {}", self.discord.invalid_request_budget),
            format!("discord.message_content_intent = {}", self.discord.message_content_intent),
            format!(
                "discord.shards = {}",
                match self.discord.shards {
                    Shards::Auto => "auto".to_owned(),
                    Shards::Count(n) => n.to_string(),
                }
            ),
            format!(
                "discord.shard_ids = {}",
                self.discord.shard_ids.map_or_else(|| "all".to_owned(), |(a, b)| format!("{a}-{b}"))
            ),
            format!("database.url = {}", crate::store::mask_url_password(&self.database.url)),
            format!("http.bind = {}", self.http.bind),
            format!("http.trust_forwarded_for = {}", self.http.trust_forwarded_for),
            format!("http.trusted_proxies = {proxies}"),
            format!("http.max_body_bytes = {}", self.http.max_body_bytes),
            format!("keys.max_per_guild = {}", self.keys.max_per_guild),
            format!("keys.prefix = {}", self.keys.prefix),
            format!("keys.default_rate_limit_per_minute = {}", self.keys.default_rate_limit_per_minute),
            format!("keys.last_used_flush_seconds = {}", self.keys.last_used_flush_seconds),
            format!("keys.default_ban_budget = {}", self.keys.default_ban_budget),
            format!("keys.default_role_budget = {}", self.keys.default_role_budget),
            format!("keys.expiry_check_seconds = {}", self.keys.expiry_check_seconds),
            format!("log.format = {format}"),
            format!("run.only = {}", self.run.only.as_str()),
            format!("webhooks.allow_http = {}", self.webhooks.allow_http),
            format!("webhooks.allow_private_addresses = {}", self.webhooks.allow_private_addresses),
            format!(
                "webhooks.retry_delays = {}",
                self.webhooks.retry_delays.iter().map(|d| show_delay(*d)).collect::<Vec<_>>().join(", ")
            ),
            format!("usage.minute_retention_hours = {}", self.usage.minute_retention_hours),
            format!("usage.hour_retention_days = {}", self.usage.hour_retention_days),
            format!("usage.request_log_per_key = {}", self.usage.request_log_per_key),
        ]
        .join("\n")
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config file", format!("cannot read {}: {e}", path.display())))
}

/// Takes known keys out of the parsed file, checking each one's type.
struct FileReader<'a> {
    table: &'a mut toml::Table,
}

impl FileReader<'_> {
    fn take(&mut self, section: &str, key: &str) -> Result<Option<toml::Value>, ConfigError> {
        let Some(value) = self.table.get_mut(section) else { return Ok(None) };
        let toml::Value::Table(inner) = value else {
            return Err(ConfigError::new(section, "must be a table like [section]"));
        };
        Ok(inner.remove(key))
    }

    fn string(&mut self, section: &str, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(section, key)? {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(section, key, "a string", &other)),
        }
    }

    /// A string, or a whole number read as its text (`shards = 4` or `"auto"`).
    fn string_or_integer(&mut self, section: &str, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(section, key)? {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(toml::Value::Integer(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(wrong_type(section, key, "a string or a whole number", &other)),
        }
    }

    fn bool(&mut self, section: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(section, key)? {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(section, key, "true or false", &other)),
        }
    }

    /// An array of strings, or one string (each may hold a comma-separated list).
    fn string_list(&mut self, section: &str, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.take(section, key)? {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s])),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(wrong_type(section, key, "an array of strings", &other)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(wrong_type(section, key, "a string or an array of strings", &other)),
        }
    }

    fn integer(&mut self, section: &str, key: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        match self.take(section, key)? {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(toml::Value::Integer(n)) => {
                Err(ConfigError::new(format!("{section}.{key}"), format!("{n} is out of range; use {min} to {max}")))
            }
            Some(other) => Err(wrong_type(section, key, "a whole number", &other)),
        }
    }

    fn reject_unknown(self) -> Result<(), ConfigError> {
        for (section, value) in self.table.iter() {
            match value {
                toml::Value::Table(inner) if KNOWN_SECTIONS.contains(&section.as_str()) => {
                    if let Some(key) = inner.keys().next() {
                        return Err(ConfigError::new(format!("{section}.{key}"), "unknown key"));
                    }
                }
                _ => return Err(ConfigError::new(section.as_str(), "unknown key")),
            }
        }
        Ok(())
    }
}

const KNOWN_SECTIONS: [&str; 8] = ["discord", "database", "http", "keys", "log", "run", "webhooks", "usage"];

fn wrong_type(section: &str, key: &str, want: &str, got: &toml::Value) -> ConfigError {
    ConfigError::new(format!("{section}.{key}"), format!("must be {want}, not a {}", got.type_str()))
}

fn parse_base_url(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim().trim_end_matches('/');
    let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(v.to_owned()),
        _ => Err(ConfigError::new(key, format!("'{v}' is not an http(s) URL like https://discord.com"))),
    }
}

fn parse_register(key: &str, v: &str) -> Result<RegisterCommands, ConfigError> {
    match v.trim() {
        "global" => Ok(RegisterCommands::Global),
        "none" => Ok(RegisterCommands::None),
        other => other
            .strip_prefix("guild:")
            .and_then(|id| id.parse::<u64>().ok())
            .filter(|&id| id > 0)
            .map(RegisterCommands::Guild)
            .ok_or_else(|| ConfigError::new(key, format!("'{other}' is not global, none or guild:<guild id>"))),
    }
}

fn parse_shards(key: &str, v: &str) -> Result<Shards, ConfigError> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(Shards::Auto);
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .map(Shards::Count)
        .ok_or_else(|| ConfigError::new(key, format!("'{v}' is not auto or a shard count from 1 to {MAX_SHARDS}")))
}

/// `N` or `FIRST-LAST` (inclusive), shard ids counted from 0.
fn parse_shard_ids(key: &str, v: &str) -> Result<(u32, u32), ConfigError> {
    let v = v.trim();
    let id = |s: &str| s.trim().parse::<u32>().ok().filter(|&n| n < MAX_SHARDS);
    let range = match v.split_once('-') {
        Some((a, b)) => id(a).zip(id(b)),
        None => id(v).map(|n| (n, n)),
    };
    match range {
        Some((first, last)) if first <= last => Ok((first, last)),
        _ => Err(ConfigError::new(key, format!("'{v}' is not a shard id or range like 0-1 (first to last, from 0)"))),
    }
}

fn parse_db_url(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    crate::store::check_url(v).map_err(|why| ConfigError::new(key, one_line(&why)))?;
    Ok(v.to_owned())
}

/// An address like `127.0.0.1:8080` or `[::]:8080`, or a host name and port
/// (`localhost:8080`), resolved now to its first address.
fn parse_bind(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let v = v.trim();
    let bad = || ConfigError::new(key, format!("'{v}' is not an address like 127.0.0.1:8080"));
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    // Only `host:port` is worth resolving; anything else is refused as is.
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let mut addrs = v.to_socket_addrs().map_err(|e| ConfigError::new(key, format!("'{v}': {e}")))?;
    addrs.next().ok_or_else(bad)
}

/// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (a /32 or
/// /128), in strings that may each hold a comma-separated list. Host bits are
/// cleared (`10.1.2.3/8` is `10.0.0.0/8`); repeats are dropped.
fn parse_cidrs(key: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let mut nets = Vec::new();
    for word in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|w| !w.is_empty()) {
        let net = if word.contains('/') {
            word.parse::<ipnet::IpNet>().ok().map(|n| n.trunc())
        } else {
            word.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
        };
        let net = net.ok_or_else(|| {
            let shown: String = word.chars().take(50).collect();
            ConfigError::new(key, format!("'{shown}' is not a CIDR range or IP address like 10.0.0.0/8 or ::1"))
        })?;
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

fn parse_prefix(key: &str, v: &str) -> Result<String, ConfigError> {
    let ok = (1..=16).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(key, format!("'{v}' must be 1-16 lowercase letters or digits, starting with a letter")))
    }
}

fn parse_role(key: &str, v: &str) -> Result<ProcessRole, ConfigError> {
    v.parse().map_err(|message: String| ConfigError::new(key, message))
}

fn parse_log_format(key: &str, v: &str) -> Result<LogFormat, ConfigError> {
    match v.trim() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        other => Err(ConfigError::new(key, format!("'{other}' is not pretty or json"))),
    }
}

/// The longest wait before one retry, and before the last: a message is
/// given up at most this long after its first attempt.
const MAX_RETRY_SPAN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Waits like `["5s", "1m", "2h"]` (or one comma-separated string): a whole
/// number and `ms`, `s`, `m` or `h`, 1 to 20 of them, at most 24 h in all.
fn parse_retry_delays(key: &str, values: &[String]) -> Result<Vec<std::time::Duration>, ConfigError> {
    let mut delays = Vec::new();
    for word in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|w| !w.is_empty()) {
        let shown: String = word.chars().take(20).collect();
        let bad = || ConfigError::new(key, format!("'{shown}' is not a wait like 500ms, 5s, 1m or 2h"));
        let split = word.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = word[..split].parse().map_err(|_| bad())?;
        let millis = match &word[split..] {
            "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => return Err(bad()),
        };
        let delay = millis.filter(|&ms| ms > 0).map(std::time::Duration::from_millis).ok_or_else(bad)?;
        delays.push(delay);
    }
    if delays.is_empty() || delays.len() > 20 {
        return Err(ConfigError::new(key, "give 1 to 20 waits, like [\"5s\", \"1m\", \"5m\"]"));
    }
    if delays.iter().sum::<std::time::Duration>() > MAX_RETRY_SPAN {
        return Err(ConfigError::new(key, "the waits add up to more than 24h"));
    }
    Ok(delays)
}

/// A wait as `parse_retry_delays` reads it, in its largest whole unit.
fn show_delay(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_are_auto_or_a_count_and_shard_ids_a_range_inside_them() {
        let load = |text: &str, env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            super::Config::from_parts(Some(text), &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        let cfg = load("", &[]).unwrap();
        assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Auto, None));
        let cfg = load("[discord]\nshards = 4\nshard_ids = \"2-3\"\n", &[]).unwrap();
        assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Count(4), Some((2, 3))));
        let cfg =
            load("[discord]\nshards = \"auto\"\n", &[("GUILDKEY_SHARDS", "2"), ("GUILDKEY_SHARD_IDS", "1")]).unwrap();
        assert_eq!((cfg.discord.shards, cfg.discord.shard_ids), (super::Shards::Count(2), Some((1, 1))));
        for (text, env, key) in [
            ("[discord]\nshards = 0\n", vec![], "discord.shards"),
            ("[discord]\nshards = \"many\"\n", vec![], "discord.shards"),
            ("[discord]\nshards = true\n", vec![], "discord"),
            ("[discord]\nshard_ids = \"0-1\"\n", vec![], "discord.shard_ids"),
            ("[discord]\nshards = 4\nshard_ids = \"3-4\"\n", vec![], "discord.shard_ids"),
            ("[discord]\nshards = 4\nshard_ids = \"2-1\"\n", vec![], "discord.shard_ids"),
            ("", vec![("GUILDKEY_SHARDS", "-1")], "GUILDKEY_SHARDS"),
        ] {
            let err = load(text, &env).unwrap_err();
            assert!(err.key.starts_with(key), "{text:?} {env:?}: {err}");
        }
    }

    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_parts(Some(text), &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_match_the_spec() {
        let cfg = load("", &[]).unwrap();
        assert_eq!(cfg.discord.api_base_url, "https://discord.com");
        assert_eq!(cfg.discord.register_commands, RegisterCommands::Global);
        assert_eq!(cfg.database.url, "sqlite://data/guildkey.db?mode=rwc");
        assert_eq!(cfg.http.bind.to_string(), "127.0.0.1:8080");
        assert!(!cfg.http.trust_forwarded_for);
        assert_eq!(cfg.http.max_body_bytes, 16_384);
        assert_eq!(cfg.keys.max_per_guild, 3);
        assert_eq!(cfg.keys.prefix, "gk");
        assert_eq!(cfg.keys.default_rate_limit_per_minute, 60);
        assert_eq!(cfg.keys.last_used_flush_seconds, 5);
        assert_eq!(cfg.log.format, LogFormat::Pretty);
        assert!(!cfg.discord_is_proxied());
    }

    #[test]
    fn environment_overrides_the_file() {
        let cfg = load(
            "[http]\nbind = \"127.0.0.1:1\"\n[discord]\nregister_commands = \"none\"\n",
            &[("GUILDKEY_HTTP_BIND", "127.0.0.1:0"), ("GUILDKEY_REGISTER_COMMANDS", "guild:42")],
        )
        .unwrap();
        assert_eq!(cfg.http.bind.port(), 0);
        assert_eq!(cfg.discord.register_commands, RegisterCommands::Guild(42));
    }

    #[test]
    fn bind_takes_a_host_name_and_port() {
        let cfg = load("[http]\nbind = \"localhost:0\"\n", &[]).unwrap();
        assert!(cfg.http.bind.ip().is_loopback(), "{}", cfg.http.bind);
        assert_eq!(cfg.http.bind.port(), 0);
        for bad in ["localhost", "localhost:http", ":8080", "localhost:70000"] {
            let e = load(&format!("[http]\nbind = \"{bad}\"\n"), &[]).unwrap_err().to_string();
            assert!(e.contains("http.bind") && e.contains("not an address"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[http]\nbind = \"nope\"", "http.bind"),
            ("[http]\nbind = 5", "http.bind"),
            ("[http]\nmax_body_bytes = 0", "http.max_body_bytes"),
            ("[http]\ntrust_forwarded_for = \"yes\"", "http.trust_forwarded_for"),
            ("[keys]\nmax_per_guild = -1", "keys.max_per_guild"),
            ("[keys]\nprefix = \"GK_\"", "keys.prefix"),
            ("[keys]\ndefault_rate_limit_per_minute = 0", "keys.default_rate_limit_per_minute"),
            ("[keys]\nlast_used_flush_seconds = \"5\"", "keys.last_used_flush_seconds"),
            ("[keys]\nexpiry_check_seconds = 0", "keys.expiry_check_seconds"),
            ("[keys]\nexpiry_check_seconds = 3601", "keys.expiry_check_seconds"),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[run]\nonly = \"gateway\"", "run.only"),
            ("[run]\nonly = 1", "run.only"),
            ("[run]\nonyl = \"http\"", "run.onyl"),
            ("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]", "http.trusted_proxies"),
            ("[http]\ntrusted_proxies = \"10.0.0.1, proxy.local\"", "http.trusted_proxies"),
            ("[http]\ntrusted_proxies = [\"10.0.0.1\", 5]", "http.trusted_proxies"),
            ("[http]\ntrusted_proxies = 5", "http.trusted_proxies"),
            ("[discord]\nregister_commands = \"guild:abc\"", "discord.register_commands"),
            ("[discord]\napi_base_url = \"ftp://x\"", "discord.api_base_url"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[database]\nurl = \"postgres://x:99999999/db\"", "database.url"),
            ("[database]\nurl = \"sqlite://\"", "database.url"),
            ("[database]\nurl = \"sqlite::memory:\"", "database.url"),
            ("[database]\nurl = \"sqlite://x.db?mode=memory\"", "database.url"),
            ("[http]\nbnid = \"1\"", "http.bnid"),
            ("[htp]\nbind = \"1\"", "htp"),
            ("[http\n", "config file"),
        ];
        for (text, key) in cases {
            let err = load(text, &[]).unwrap_err();
            assert_eq!(err.key, key, "{text:?} gave {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let err = load("", &[("GUILDKEY_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(err.key.starts_with("GUILDKEY_LOG_FORMAT"), "{err}");
    }

    #[test]
    fn the_process_role_is_both_by_default_or_http_or_bot_from_the_file_or_the_environment() {
        assert_eq!(load("", &[]).unwrap().run.only, ProcessRole::Both);
        assert_eq!(load("[run]\nonly = \"http\"\n", &[]).unwrap().run.only, ProcessRole::Http);
        let cfg = load("[run]\nonly = \"http\"\n", &[("GUILDKEY_ONLY", "bot")]).unwrap();
        assert_eq!(cfg.run.only, ProcessRole::Bot);
        assert!(cfg.describe().contains("run.only = bot"), "{}", cfg.describe());
        assert_eq!(load("", &[("GUILDKEY_ONLY", "both")]).unwrap().run.only, ProcessRole::Both);
        let err = load("", &[("GUILDKEY_ONLY", "listener")]).unwrap_err();
        assert_eq!(err.key, "GUILDKEY_ONLY (run.only)", "{err}");
        assert!(err.to_string().contains("'listener' is not http"), "{err}");
        let roles = [ProcessRole::Both, ProcessRole::Http, ProcessRole::Bot];
        assert_eq!(roles.map(|r| (r.runs_http(), r.runs_bot())), [(true, true), (true, false), (false, true)]);
    }

    #[test]
    fn control_characters_in_bad_values_and_unknown_keys_are_escaped_to_keep_one_line() {
        // Shrunk inputs found by tests/properties.rs.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 3] = [
            ("[discord]\napi_base_url = \"guild:\\n1\"\n", &[], "discord.api_base_url: 'guild:\\n1'"),
            ("", &[("DISCORD_API_BASE_URL", "a\r0")], "DISCORD_API_BASE_URL (discord.api_base_url): 'a\\r0'"),
            ("[log]\n\"a\\nb\" = 1\n", &[], "log.a\\nb: unknown key"),
        ];
        for (text, env, want) in cases {
            let err = load(text, env).unwrap_err().to_string();
            assert!(!err.contains(['\n', '\r']), "{err:?}");
            assert!(err.starts_with(want), "{text:?} {env:?} gave {err:?}");
        }
    }

    #[test]
    fn the_example_config_documents_every_key_with_its_default() {
        let example = include_str!("../config.example.toml");
        let cfg = load(example, &[]).expect("config.example.toml loads");
        assert_eq!(cfg.describe(), Config::default().describe());
        for line in Config::default().describe().lines() {
            let key = line.split(" = ").next().unwrap();
            let leaf = key.rsplit('.').next().unwrap();
            assert!(example.contains(leaf), "config.example.toml does not document {key}");
        }
    }

    #[test]
    fn trusted_proxies_take_an_array_a_comma_separated_string_or_the_environment() {
        let want = "http.trusted_proxies = 10.0.0.0/8, 192.0.2.1/32, 2001:db8::/32";
        for text in [
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::/32\"]\n",
            "[http]\ntrusted_proxies = \"10.1.2.3/8, 192.0.2.1 ,2001:db8::/32\"\n",
            "[http]\ntrusted_proxies = [\"10.0.0.0/8, 192.0.2.1\", \"2001:db8::/32\", \"10.0.0.0/8\"]\n",
        ] {
            let cfg = load(text, &[]).unwrap();
            assert!(cfg.describe().contains(want), "{text:?}: {}", cfg.describe());
        }
        let cfg = load(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
            &[("GUILDKEY_HTTP_TRUSTED_PROXIES", "192.0.2.0/24,::1")],
        )
        .unwrap();
        assert!(cfg.describe().contains("http.trusted_proxies = 192.0.2.0/24, ::1/128"), "{}", cfg.describe());
        let err = load("", &[("GUILDKEY_HTTP_TRUSTED_PROXIES", "192.0.2.0/24,nope")]).unwrap_err();
        assert_eq!(err.key, "GUILDKEY_HTTP_TRUSTED_PROXIES (http.trusted_proxies)", "{err}");
        assert!(err.to_string().contains("'nope'"), "{err}");
    }

    #[test]
    fn forwarding_without_trusted_proxies_warns_and_so_do_proxies_without_forwarding() {
        let warnings = |text: &str| load(text, &[]).unwrap().http.warnings();
        assert!(warnings("").is_empty());
        let open = warnings("[http]\ntrust_forwarded_for = true\n");
        assert!(open.len() == 1 && open[0].contains("http.trusted_proxies is empty"), "{open:?}");
        assert!(warnings("[http]\ntrust_forwarded_for = true\ntrusted_proxies = \"10.0.0.0/8\"\n").is_empty());
        let unused = warnings("[http]\ntrusted_proxies = \"10.0.0.0/8\"\n");
        assert!(unused.len() == 1 && unused[0].contains("X-Forwarded-For is ignored"), "{unused:?}");
    }

    #[test]
    fn webhook_settings_default_to_public_https_and_take_retry_waits() {
        let cfg = load("", &[]).unwrap();
        assert!(!cfg.webhooks.allow_http && !cfg.webhooks.allow_private_addresses);
        assert!(cfg.describe().contains("webhooks.retry_delays = 5s, 1m, 5m, 30m, 2h, 5h, 10h"), "{}", cfg.describe());
        let cfg = load(
            "[webhooks]\nallow_http = true\nallow_private_addresses = true\nretry_delays = [\"100ms\", \"2s\"]\n",
            &[],
        )
        .unwrap();
        assert!(cfg.webhooks.allow_http && cfg.webhooks.allow_private_addresses);
        let ms: Vec<u128> = cfg.webhooks.retry_delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 2000]);
        assert!(cfg.describe().contains("webhooks.retry_delays = 100ms, 2s"), "{}", cfg.describe());
        for (text, needle) in [
            ("[webhooks]\nretry_delays = []\n", "1 to 20"),
            ("[webhooks]\nretry_delays = [\"5\"]\n", "'5'"),
            ("[webhooks]\nretry_delays = [\"0s\"]\n", "'0s'"),
            ("[webhooks]\nretry_delays = \"5x\"\n", "'5x'"),
            ("[webhooks]\nretry_delays = [\"20h\", \"5h\"]\n", "24h"),
            ("[webhooks]\nallow_http = \"yes\"\n", "true or false"),
            ("[webhooks]\nallow_privat_addresses = true\n", "unknown key"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.starts_with("webhooks.") && err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn usage_settings_default_to_48_hours_90_days_and_200_log_entries() {
        let cfg = load("", &[]).unwrap();
        assert_eq!(
            cfg.usage,
            UsageConfig { minute_retention_hours: 48, hour_retention_days: 90, request_log_per_key: 200 }
        );
        let cfg = load("[usage]\nminute_retention_hours = 2\nhour_retention_days = 1\nrequest_log_per_key = 0\n", &[])
            .unwrap();
        assert_eq!(
            cfg.usage,
            UsageConfig { minute_retention_hours: 2, hour_retention_days: 1, request_log_per_key: 0 }
        );
        assert!(cfg.describe().contains("usage.request_log_per_key = 0"), "{}", cfg.describe());
        for (text, needle) in [
            ("[usage]\nminute_retention_hours = 1\n", "out of range; use 2 to 744"),
            ("[usage]\nhour_retention_days = 0\n", "out of range; use 1 to 3660"),
            ("[usage]\nrequest_log_per_key = 100001\n", "out of range; use 0 to 100000"),
            ("[usage]\nrequest_log_per_key = \"200\"\n", "must be a whole number"),
            (
                "[usage]\nminute_retention_hours = 72\nhour_retention_days = 2\n",
                "shorter than usage.minute_retention_hours",
            ),
            ("[usage]\nretention = 3\n", "unknown key"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.starts_with("usage.") && err.contains(needle) && !err.contains('\n'), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_token_is_masked_everywhere() {
        let cfg = load("", &[("DISCORD_TOKEN", "MTIz.secret.token-value")]).unwrap();
        let shown = format!("{} {:?}", cfg.describe(), cfg);
        assert!(!shown.contains("secret.token-value"), "{shown}");
        assert!(cfg.describe().contains("discord.token = ********"));
    }
}
