//! Every setting, written once: its section, key, type, default, kind (how
//! it is read, validated and shown, [`super::values`]) and environment
//! variable, if it has one. `settings!` turns the table into the public
//! sections, their defaults, the serde-derived file sections (each with
//! `deny_unknown_fields`), the environment overrides and `config check`'s
//! lines, in table order.

use std::net::SocketAddr;
use std::time::Duration;

use super::values::{
    BaseUrl, Bind, Checked, Cidrs, DbUrl, Flag, Format, Int, KeyPrefix, Kind, OptAddr, OptPath, OptUrl, PemFile,
    Register, RetryDelays, Role, SealKey, ServiceUrl, ShardCount, ShardIds, SslMode, Token,
};
use super::{
    ConfigError, LogFormat, ProcessRole, RegisterCommands, Secret, Shards, DEFAULT_RETRY_DELAYS_SECONDS,
    DISCORD_API_DEFAULT,
};

/// Generates, from one table: each section's public struct and `Default`;
/// its file form (serde, unknown keys refused, every key optional, each
/// value validated as it is read); [`Config`]; [`File`]; [`apply_env`];
/// [`describe`].
macro_rules! settings {
    ($(
        $(#[$section_meta:meta])*
        $section:ident: $Section:ident, $FileSection:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident: $ty:ty = $default:expr, $kind:ty $(, env $env:literal)?;
            )*
        }
    )*) => {
        $(
            $(#[$section_meta])*
            pub struct $Section {
                $( $(#[$field_meta])* pub $field: $ty, )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self { $( $field: $default, )* }
                }
            }

            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $FileSection {
                $( $field: Option<Checked<$kind>>, )*
            }

            impl $FileSection {
                fn apply(self, to: &mut $Section) {
                    $( if let Some(Checked(v)) = self.$field { to.$field = v; } )*
                }
            }
        )*

        /// Every setting in effect.
        #[derive(Debug, Clone, Default)]
        pub struct Config {
            $( pub $section: $Section, )*
        }

        /// The config file as serde reads it: every section optional,
        /// unknown sections and keys refused.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct File {
            $( $section: Option<$FileSection>, )*
        }

        impl File {
            /// Sets what the file sets.
            pub(super) fn apply(self, cfg: &mut Config) {
                $( if let Some(s) = self.$section { s.apply(&mut cfg.$section); } )*
            }
        }

        /// Environment overrides, each named in its error as
        /// `VARIABLE (section.key)`.
        pub(super) fn apply_env(cfg: &mut Config, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
            $($($(
                if let Some(v) = var($env) {
                    cfg.$section.$field = <$kind as Kind>::from_env(&v).map_err(|message| {
                        ConfigError::new(format!("{} ({}.{})", $env, stringify!($section), stringify!($field)), message)
                    })?;
                }
            )?)*)*
            Ok(())
        }

        /// The effective settings, one `section.key = value` a line,
        /// secrets masked.
        pub(super) fn describe(cfg: &Config) -> Vec<String> {
            vec![$($(
                format!(
                    "{}.{} = {}",
                    stringify!($section),
                    stringify!($field),
                    <$kind as Kind>::show(&cfg.$section.$field)
                ),
            )*)*]
        }
    };
}

settings! {
    #[derive(Debug, Clone)]
    discord: DiscordConfig, DiscordFile {
        /// Required for `run` only; the CLI works without it.
        token: Option<Secret> = None, Token, env "DISCORD_TOKEN";
        api_base_url: String = DISCORD_API_DEFAULT.to_owned(), BaseUrl, env "DISCORD_API_BASE_URL";
        /// Connect to this address for `discord.com` instead of the one DNS
        /// gives (an egress relay, or a test's Discord); TLS still checks
        /// discord.com's certificate, so serenity's own rate limiting stays on.
        connect_to: Option<SocketAddr> = None, OptAddr, env "GUILDKEY_DISCORD_CONNECT_TO";
        /// A PEM file of certificates trusted for Discord's TLS besides the
        /// built-in roots (a TLS-inspecting egress proxy's, or a test CA).
        ca_file: Option<std::path::PathBuf> = None, OptPath, env "GUILDKEY_DISCORD_CA_FILE";
        register_commands: RegisterCommands = RegisterCommands::Global, Register, env "GUILDKEY_REGISTER_COMMANDS";
        /// Invalid answers (401, 403, 429) Discord may give one guild's calls
        /// in 10 minutes before guildkey stops calling Discord for that guild
        /// until the count falls again. Discord cuts the bot off from its API
        /// for every guild after 10,000 from one IP.
        invalid_request_budget: u32 = 50, Int<u32, 1, 5000>;
        /// Invalid answers the whole bot may earn in 10 minutes, every
        /// instance together (shared through the database): as it runs out,
        /// the guilds refused most are paused first. Well under Discord's
        /// 10,000, which would cut the bot off for every guild.
        bot_invalid_request_budget: u32 = 2500, Int<u32, 1, 9000>;
        /// The operator enabled the privileged MESSAGE_CONTENT intent for the
        /// bot: the leak guard then also revokes a key it catches in a message.
        message_content_intent: bool = false, Flag;
        /// How many gateway shards the bot runs in all.
        shards: Shards = Shards::Auto, ShardCount, env "GUILDKEY_SHARDS";
        /// The shards this process runs, first to last inclusive (`None`: all).
        shard_ids: Option<(u32, u32)> = None, ShardIds, env "GUILDKEY_SHARD_IDS";
    }

    #[derive(Debug, Clone)]
    database: DatabaseConfig, DatabaseFile {
        url: String = "sqlite://data/guildkey.db?mode=rwc".to_owned(), DbUrl, env "DATABASE_URL";
        /// PostgreSQL's TLS: disable, allow, prefer, require, verify-ca or
        /// verify-full; replaces the URL's `sslmode` when set.
        sslmode: Option<String> = None, SslMode, env "DATABASE_SSLMODE";
        /// The CA certificate (PEM file) verify-ca and verify-full check the
        /// server against; replaces the URL's `sslrootcert` when set.
        sslrootcert: Option<String> = None, PemFile, env "DATABASE_SSLROOTCERT";
    }

    #[derive(Debug, Clone)]
    http: HttpConfig, HttpFile {
        bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), Bind, env "GUILDKEY_HTTP_BIND";
        trust_forwarded_for: bool = false, Flag, env "GUILDKEY_HTTP_TRUST_FORWARDED_FOR";
        /// Peers whose `X-Forwarded-For` is believed (with `trust_forwarded_for`);
        /// empty means any peer's, as before this key existed.
        trusted_proxies: Vec<ipnet::IpNet> = Vec::new(), Cidrs, env "GUILDKEY_HTTP_TRUSTED_PROXIES";
        max_body_bytes: usize = 16_384, Int<usize, 1, { 64 * 1024 * 1024 }>;
        /// Connections one client address (IPv6: one /64) may hold open at
        /// once; more are closed as they arrive (`http/connections.rs`).
        max_connections_per_ip: usize = 256, Int<usize, 1, 1_000_000>;
        /// Connections held open at once in all (and never more than the
        /// open-files limit leaves room for); at the cap new ones wait.
        max_connections: usize = 16_384, Int<usize, 1, 1_000_000>;
        /// The listener's public base URL as games and scripts reach it
        /// (`https://keys.example.com`): written as the allowed `domain` of a
        /// key delivered into a Roblox experience's Secrets store.
        public_url: Option<String> = None, OptUrl, env "GUILDKEY_HTTP_PUBLIC_URL";
    }

    #[derive(Debug, Clone)]
    keys: KeysConfig, KeysFile {
        max_per_guild: u32 = 3, Int<u32, 1, 1000>;
        prefix: String = "gk".to_owned(), KeyPrefix;
        default_rate_limit_per_minute: u32 = 60, Int<u32, 1, 100_000>;
        last_used_flush_seconds: u64 = 5, Int<u64, 1, 3600>;
        /// Bans a key may make in 10 minutes before the breaker suspends it,
        /// unless the key sets its own.
        default_ban_budget: u32 = 30, Int<u32, 1, 10_000>;
        /// Role changes likewise.
        default_role_budget: u32 = 300, Int<u32, 1, 10_000>;
        /// How often the upkeep looks for keys whose expiry reminder is due
        /// (`keys.expiry_check_seconds`).
        expiry_check_seconds: u64 = 60, Int<u64, 1, 3600>;
        /// How often the bot re-reads every key maker's roles from Discord,
        /// for what no gateway event shows (a maker who left): at least
        /// hourly (`keys.maker_check_seconds`).
        maker_check_seconds: u64 = 3600, Int<u64, 1, 3600>;
    }

    /// Leaked-token reports (`POST /v1/leaked`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    leaks: LeaksConfig, LeaksFile {
        /// GitHub's secret-scanning public keys document (the JSON of
        /// `GITHUB_PUBLIC_KEYS_URL`). Set, every report must carry GitHub's
        /// signature; unset, any report is taken (it can only revoke).
        github_public_keys_file: Option<std::path::PathBuf> = None, OptPath, env "GUILDKEY_GITHUB_PUBLIC_KEYS_FILE";
        /// Where that file's keys are refreshed from (hourly, and when a
        /// report names an unknown key); `""` never refreshes.
        github_public_keys_url: Option<String> = Some(GITHUB_PUBLIC_KEYS_URL.to_owned()), OptUrl;
    }

    #[derive(Debug, Clone)]
    log: LogConfig, LogFile {
        format: LogFormat = LogFormat::Pretty, Format, env "GUILDKEY_LOG_FORMAT";
    }

    /// What `guildkey run` runs.
    #[derive(Debug, Clone)]
    run: RunConfig, RunFile {
        /// The process's role: the listener, the bot, or both.
        only: ProcessRole = ProcessRole::Both, Role, env "GUILDKEY_ONLY";
    }

    /// Where webhooks may point and how their deliveries are retried.
    #[derive(Debug, Clone, PartialEq, Eq)]
    webhooks: WebhooksConfig, WebhooksFile {
        /// Accept `http://` webhook URLs (only `https://` otherwise).
        allow_http: bool = false, Flag;
        /// Accept webhook URLs whose host is (or resolves to) a private,
        /// loopback, link-local, unique-local, CGNAT or unspecified address:
        /// for a receiver on the operator's own network. Off, such a URL is
        /// refused when set and again at every delivery (DNS can change).
        allow_private_addresses: bool = false, Flag;
        /// The wait after each failed attempt before the next; a message is
        /// given up once they are used up.
        retry_delays: Vec<Duration> = DEFAULT_RETRY_DELAYS_SECONDS.map(Duration::from_secs).to_vec(), RetryDelays;
        /// Messages one guild may have waiting; past them its further events
        /// are folded into one `events.skipped` summary at the end of its
        /// queue (`service::webhooks`), so a dead receiver costs bounded rows.
        max_pending_per_guild: u32 = 1_000, Int<u32, 1, 100_000>;
    }

    /// The outside services Roblox games use: account linkers (Roblox id →
    /// Discord id) and Roblox Open Cloud. `https://`, or `http://` for a
    /// loopback address only.
    #[derive(Debug, Clone, PartialEq, Eq)]
    roblox: RobloxConfig, RobloxFile {
        bloxlink_base_url: String = BLOXLINK_BASE_URL.to_owned(), ServiceUrl, env "GUILDKEY_ROBLOX_BLOXLINK_BASE_URL";
        rover_base_url: String = ROVER_BASE_URL.to_owned(), ServiceUrl, env "GUILDKEY_ROBLOX_ROVER_BASE_URL";
        open_cloud_base_url: String = OPEN_CLOUD_BASE_URL.to_owned(), ServiceUrl, env "GUILDKEY_ROBLOX_OPEN_CLOUD_BASE_URL";
        /// A ban not pushed into a game this long after it was queued is
        /// given up (an audit event `roblox.push_failed`).
        push_give_up_seconds: u64 = 3600, Int<u64, 1, 86_400>, env "GUILDKEY_ROBLOX_PUSH_GIVE_UP_SECONDS";
    }

    /// The key third-party credentials (linker and Open Cloud keys) are
    /// stored encrypted under (`service::credentials`): 32 bytes in base64.
    /// Required once a guild stores one; best given in the environment.
    #[derive(Debug, Clone)]
    secrets: SecretsConfig, SecretsFile {
        key: Option<Secret> = None, SealKey, env "GUILDKEY_SECRETS_KEY";
        /// The key being rotated away from: still opens what it sealed
        /// until `guildkey secrets reseal` has sealed everything anew.
        previous_key: Option<Secret> = None, SealKey, env "GUILDKEY_SECRETS_KEY_PREVIOUS";
    }

    /// How long usage counters and the request log are kept
    /// (`service::usage`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    usage: UsageConfig, UsageFile {
        /// Minute buckets are kept this many hours (then only their hours).
        minute_retention_hours: u32 = 48, Int<u32, 2, { 24 * 31 }>;
        /// Hour buckets (and requests per IP) are kept this many days.
        hour_retention_days: u32 = 90, Int<u32, 1, 3660>;
        /// The newest requests kept in each key's request log; 0 keeps none.
        request_log_per_key: u32 = 200, Int<u32, 0, 100_000>;
    }
}

/// Bloxlink's API.
pub const BLOXLINK_BASE_URL: &str = "https://api.blox.link";
/// RoVer's API.
pub const ROVER_BASE_URL: &str = "https://registry.rover.link";
/// Roblox Open Cloud.
pub const OPEN_CLOUD_BASE_URL: &str = "https://apis.roblox.com";

/// GitHub's secret-scanning public keys document.
pub const GITHUB_PUBLIC_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

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
