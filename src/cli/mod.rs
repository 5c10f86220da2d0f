//! The command line: `guildkey [--config PATH] <command>`.
//!
//! Adapters only: parse arguments with clap, call the service, print. Exit
//! codes are one table, here:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | a refused or failed operation: limit reached, unknown key, deleting an active key, database unreachable |
//! | 2 | bad config or usage: unknown flag, bad value, bad scope, bad duration, bad CIDR, bad name |
//!
//! Errors are one line on stderr. Only `keys create` and `keys rotate` print
//! a key's secret, and `keys webhook set` a new webhook signing secret, each
//! alone on stdout.

mod config_check;
mod keys;
mod migrate;
mod roblox;
mod roblox_push;
mod run;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigSource};
use crate::service::Error;

/// Discord bot and HTTP listener that issue and verify per-guild API keys.
#[derive(Debug, Parser)]
#[command(name = "guildkey", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Opts {
    /// Config file (default ./config.toml, used if present)
    #[arg(long, global = true, env = "GUILDKEY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Shown under `guildkey --help`.
const AFTER_HELP: &str = "\
Examples:
  guildkey                      run the listener and the bot (same as `guildkey run`)
  guildkey run --only http      the listener alone (run several); `--only bot` for the bot alone
  guildkey config check         show the settings in effect, secrets masked
  guildkey keys create --guild 123456789012345678 --name game --scopes bans.read,roles.write
  guildkey keys list --guild 123456789012345678

Settings come from config.toml (or --config), then .env and environment variables \
(DISCORD_TOKEN, DATABASE_URL, GUILDKEY_HTTP_BIND, ...); config.example.toml documents every key.

Exit codes: 0 ok, 1 refused or failed (limit reached, unknown key, database unreachable), \
2 bad config or usage.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP listener and the Discord bot until SIGINT/SIGTERM (the default)
    Run(run::RunArgs),
    /// Apply database migrations and exit
    Migrate,
    /// Copy the SQLite database into a new file, consistently, even while `run` is serving
    Backup {
        /// The new file (must not exist); use it as `database.url` to restore
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Inspect the configuration
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Manage keys directly in the database: for bootstrapping, scripts, and when Discord is down
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Roblox games: the guild's account linker for roblox:<userId> member ids
    #[command(subcommand)]
    Roblox(roblox::RobloxCommand),
    /// The key third-party credentials are sealed under (GUILDKEY_SECRETS_KEY)
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
}

/// A failure with its exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::usage(format!("bad config: {e}"))
    }
}

impl From<crate::keys::InvalidInput> for Failure {
    fn from(e: crate::keys::InvalidInput) -> Self {
        Error::from(e).into()
    }
}

/// Names a domain field the way the CLI spells its flag.
fn flag_name(field: &str) -> &str {
    match field {
        "name" => "--name",
        "scopes" => "--scopes",
        "environment" => "--env",
        "expires_in" => "--expires",
        "rate_limit" => "--rate-limit",
        "allowed_ips" => "--allowed-ips",
        "allowed_roles" => "--allowed-roles",
        "ban_budget" => "--ban-budget",
        "role_budget" => "--role-budget",
        "grace" => "--grace",
        "grace_until_unused" => "--grace-until-unused",
        "universe" => "--universe",
        "roblox_universe" => "--roblox-universe",
        "roblox_secret" => "--roblox-secret",
        "key" => "--key",
        "topic" => "--topic",
        other => other,
    }
}

/// The one mapping of service errors to exit codes.
impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(i) => Self::usage(format!("{}: {}", flag_name(i.field), i.message)),
            Error::Internal(cause) => Self::failed(format!("{cause:#}")),
            Error::GuildNeeded { ref guilds, .. } => {
                let choose = if guilds.len() == 1 { "add --guild" } else { "choose one with --guild" };
                Self::failed(format!("{e}; {choose} ID, or give the key's id (key_…)"))
            }
            other => Self::failed(other.to_string()),
        }
    }
}

/// The application's own failures, by the same table.
impl From<crate::app::StartError> for Failure {
    fn from(e: crate::app::StartError) -> Self {
        match e {
            crate::app::StartError::Config(message) => Self::usage(message),
            crate::app::StartError::Failed(message) => Self::failed(message),
        }
    }
}

/// Parses arguments, runs the command, returns the process exit code.
pub fn main() -> ExitCode {
    // `.env` before the arguments, so a GUILDKEY_CONFIG it sets names the
    // config file as one from the environment does. A malformed `.env` is
    // reported by `Config::load`, which reads it again (set variables win).
    let _ = dotenvy::dotenv();
    let opts = match Opts::try_parse() {
        Ok(opts) => opts,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", one_line_usage_error(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(opts: Opts) -> Result<(), Failure> {
    let source = ConfigSource::from_arg(opts.config);
    let config = Config::load(&source)?;
    let command = opts.command.unwrap_or(Command::Run(run::RunArgs::default()));
    // The CLI's stderr carries its own messages; the server logs at info.
    let default_level = if matches!(command, Command::Run(_)) { "info" } else { "warn" };
    crate::telemetry::init(config.log.format, default_level);
    match command {
        Command::Run(args) => run::run(config, args).await,
        Command::Migrate => migrate::run(&config).await,
        Command::Backup { path } => {
            let bytes = crate::app::backup(&config, &path).await?;
            eprintln!(
                "backed up the database to {} ({} KiB); to restore, stop guildkey and use it as database.url \
                 (sqlite://{})",
                path.display(),
                bytes.div_ceil(1024),
                path.display()
            );
            Ok(())
        }
        Command::Config(cmd) => config_check::run(cmd, &config, &source),
        Command::Keys(cmd) => keys::run(cmd, &config).await,
        Command::Roblox(cmd) => roblox::run(cmd, &config).await,
        Command::Secrets(cmd) => secrets::run(cmd, &config).await,
    }
}

/// clap's errors span several lines; stderr gets one.
fn one_line_usage_error(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}
