//! `guildkey keys list|create|revoke|delete|rotate|webhook`: the operator's way in,
//! on the same database, audited as "The operator CLI".
//!
//! The CLI sees every guild, so `revoke`, `delete` and `rotate` accept a
//! key's id (unique everywhere) or a prefix whose keys are all in one guild
//! on their own; a name, or a prefix several guilds share, needs `--guild`
//! (see `KeyService::find`). Every answer names the key's guild.

mod webhook;

use clap::{Args, Subcommand};
use serde_json::json;

use super::Failure;
use crate::audit::Actor;
use crate::config::Config;
use crate::keys::KeyRecord;
use crate::service::{IssuedKey, KeyDraft, KeyRequest, KeyService, OldSecret};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List a guild's keys
    List {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Create a key; prints its secret once, alone on stdout
    #[command(after_help = CREATE_EXAMPLE)]
    Create(CreateArgs),
    /// Revoke a key: it stops working at once, and stays listed until deleted
    Revoke {
        /// The key's id (key_…), or its 12-character prefix (gk_live_Ab3d) or name with --guild
        #[arg(value_name = "KEY")]
        key: String,
        /// The guild (server) id the key belongs to: needed for a name, or a prefix keys of several guilds share
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: Option<u64>,
    },
    /// Delete a revoked or expired key for good (an active key must be revoked first)
    Delete {
        /// The key's id (key_…), or its 12-character prefix (gk_live_Ab3d) or name with --guild
        #[arg(value_name = "KEY")]
        key: String,
        /// The guild (server) id the key belongs to: needed for a name, or a prefix keys of several guilds share
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: Option<u64>,
    },
    /// Give a key a new secret (same id, name, scopes and settings); prints it once on stdout
    Rotate {
        /// The key's id (key_…), or its 12-character prefix (gk_live_Ab3d) or name with --guild
        #[arg(value_name = "KEY")]
        key: String,
        /// The guild (server) id the key belongs to: needed for a name, or a prefix keys of several guilds share
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: Option<u64>,
        /// Keep the old secret working this long (e.g. 10m, at most 7d); without it the old one stops at once
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        grace: Option<String>,
        /// Keep the old secret working until it has not been used for this long (1s to 30d), at most 30 days:
        /// for running servers that keep the secret they started with
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        grace_until_unused: Option<String>,
    },
    /// Suspend a key: refused at once (key_suspended) until resumed; reversible, unlike revoke
    Suspend {
        /// The key's id (key_…), or its 12-character prefix (gk_live_Ab3d) or name with --guild
        #[arg(value_name = "KEY")]
        key: String,
        /// The guild (server) id the key belongs to: needed for a name, or a prefix keys of several guilds share
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: Option<u64>,
        /// Why (kept in the audit log)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Resume a suspended key: the same secret works again
    Resume {
        /// The key's id (key_…), or its 12-character prefix (gk_live_Ab3d) or name with --guild
        #[arg(value_name = "KEY")]
        key: String,
        /// The guild (server) id the key belongs to: needed for a name, or a prefix keys of several guilds share
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: Option<u64>,
    },
    /// A guild's webhook (one per guild): signed POSTs of key events, API writes and bans
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
}

/// Shown under `guildkey keys create --help`.
const CREATE_EXAMPLE: &str = r"Example:
  guildkey keys create --guild 123456789012345678 --name game \
    --scopes bans.read,roles.write --expires 30d --rate-limit 120";

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Discord guild (server) id
    #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
    guild: u64,
    /// A name to recognise the key by (1-64 characters)
    #[arg(long)]
    name: String,
    /// Comma- or space-separated: guild.read, bans.read, bans.write, roles.write, audit.read
    #[arg(long)]
    scopes: String,
    /// live, or test (a test key's writes are dry runs: nothing changes on Discord)
    #[arg(long, value_name = "live|test", default_value = "live")]
    env: String,
    /// Expire after this long: a whole number and s, m, h or d (e.g. 12h, 30d; default: never)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    expires: Option<String>,
    /// Requests per minute allowed (default: keys.default_rate_limit_per_minute, 60)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    rate_limit: Option<i64>,
    /// Comma-separated IPs or CIDRs the key may be used from, e.g. 203.0.113.7,10.0.0.0/8 (default: any)
    #[arg(long, value_name = "CIDRS")]
    allowed_ips: Option<String>,
    /// Comma-separated role ids a roles.write key may add or remove (default: any role guildkey deems safe)
    #[arg(long, value_name = "ROLE_IDS")]
    allowed_roles: Option<String>,
    /// Bans per 10 minutes before guildkey suspends the key (default: keys.default_ban_budget, 30)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    ban_budget: Option<i64>,
    /// Role changes per 10 minutes before guildkey suspends the key (default: keys.default_role_budget, 300)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    role_budget: Option<i64>,
}

pub(super) fn parse_snowflake(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0 && id <= i64::MAX as u64)
        .ok_or_else(|| format!("'{s}' is not a Discord id (a positive whole number)"))
}

pub async fn run(cmd: KeysCommand, config: &Config) -> Result<(), Failure> {
    // Validate typed values before touching the database.
    let draft = match &cmd {
        KeysCommand::Create(a) => Some(KeyDraft::parse(&KeyRequest {
            name: &a.name,
            scopes: &a.scopes,
            environment: Some(&a.env),
            expires_in: a.expires.as_deref(),
            rate_limit: a.rate_limit,
            allowed_ips: a.allowed_ips.as_deref(),
            allowed_roles: a.allowed_roles.as_deref(),
            ban_budget: a.ban_budget,
            role_budget: a.role_budget,
        })?),
        _ => None,
    };
    if let KeysCommand::Revoke { key, .. }
    | KeysCommand::Delete { key, .. }
    | KeysCommand::Rotate { key, .. }
    | KeysCommand::Suspend { key, .. }
    | KeysCommand::Resume { key, .. } = &cmd
    {
        if key.trim().is_empty() {
            return Err(Failure::usage(
                "KEY: give the key's id (key_…), or its 12-character prefix (gk_live_…) or name with --guild",
            ));
        }
    }
    let old_secret = match &cmd {
        KeysCommand::Rotate { grace, grace_until_unused, .. } => {
            OldSecret::parse(grace.as_deref(), grace_until_unused.as_deref())?
        }
        _ => OldSecret::StopsNow,
    };
    let operator = crate::app::Operator::open(config).await?;
    // Every path closes the store, failures included: closing is what
    // checkpoints SQLite's WAL into the database file.
    let result = execute(cmd, draft, old_secret, &operator.service, config).await;
    operator.close().await;
    result
}

/// Runs one parsed command against the service.
async fn execute(
    cmd: KeysCommand,
    draft: Option<KeyDraft>,
    old_secret: OldSecret,
    service: &KeyService,
    config: &Config,
) -> Result<(), Failure> {
    let service = service.clone();
    let actor = Actor::Cli;
    match cmd {
        KeysCommand::List { guild, json } => list(&service, guild, json).await,
        KeysCommand::Create(a) => {
            let draft = draft.expect("parsed above");
            let issued = service.issue(a.guild, draft, &actor).await?;
            print_secret(&issued, "created");
            // The operator is trusted; say so, since /apikey create is not.
            eprintln!(
                "note: this key has no maker's bound: the operator CLI is trusted, so its scopes are not checked \
                 against any Discord member's permissions and guildkey never suspends it for a maker's loss \
                 (a key made with /apikey create is bounded by its maker)"
            );
            Ok(())
        }
        KeysCommand::Revoke { key, guild } => {
            let k = service.revoke(guild, &key, &actor).await?;
            eprintln!("revoked key {} '{}' ({}) in guild {}", k.id, k.name, k.prefix, k.guild_id);
            Ok(())
        }
        KeysCommand::Suspend { key, guild, reason } => {
            let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
            let details = json!({ "reason": reason });
            let k = service.set_suspended(guild, &key, true, &actor, details).await?;
            eprintln!("suspended key {} '{}' ({}) in guild {}", k.id, k.name, k.prefix, k.guild_id);
            Ok(())
        }
        KeysCommand::Resume { key, guild } => {
            let k = service.set_suspended(guild, &key, false, &actor, json!({})).await?;
            eprintln!("resumed key {} '{}' ({}) in guild {}", k.id, k.name, k.prefix, k.guild_id);
            Ok(())
        }
        KeysCommand::Delete { key, guild } => {
            let k = service.delete(guild, &key, &actor).await?;
            eprintln!("deleted key {} '{}' ({}) in guild {}", k.id, k.name, k.prefix, k.guild_id);
            Ok(())
        }
        KeysCommand::Webhook(cmd) => {
            let webhooks = crate::service::webhooks::WebhookService::new(service.clone(), config.webhooks.clone());
            webhook::run(cmd, &webhooks).await
        }
        KeysCommand::Rotate { key, guild, .. } => {
            let issued = service.rotate_with(guild, &key, old_secret, &actor).await?;
            print_secret(&issued, "rotated");
            match (issued.record.previous_secret_until_unused, issued.record.previous_secret_expires_at) {
                (Some(idle), Some(until)) => eprintln!(
                    "the previous secret keeps working until it has not been used for {idle}, and at most until {}",
                    until.to_rfc3339()
                ),
                (None, Some(until)) => eprintln!("the previous secret keeps working until {}", until.to_rfc3339()),
                _ => {}
            }
            Ok(())
        }
    }
}

/// The secret alone on stdout; what it is, on stderr.
fn print_secret(issued: &IssuedKey, verb: &str) {
    let k = &issued.record;
    println!("{}", issued.secret.expose());
    eprintln!(
        "{verb} key {} '{}' ({}) in guild {} with scopes {}; the secret above is shown only once",
        k.id, k.name, k.prefix, k.guild_id, k.scopes
    );
}

async fn list(service: &KeyService, guild: u64, json: bool) -> Result<(), Failure> {
    let keys = service.list(guild).await?;
    let now = service.now();
    if json {
        let rows: Vec<_> = keys.iter().map(|k| key_json(k, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON of plain values"));
        return Ok(());
    }
    let (active, max) = service.active_count(guild).await?;
    if keys.is_empty() {
        println!("no keys in guild {guild} (0 of {max} active keys)");
        return Ok(());
    }
    let header = ["ID", "NAME", "PREFIX", "ENV", "STATUS", "SCOPES", "CREATED", "LAST USED", "EXPIRES"];
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.name.clone(),
                k.prefix.clone(),
                k.environment.to_string(),
                k.status(now).to_string(),
                k.scopes.to_string(),
                when(Some(k.created_at)),
                when(k.last_used_at),
                when(k.expires_at),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(header.to_vec()));
    for row in &rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    println!("{active} of {max} active keys in guild {guild}");
    Ok(())
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// A key as JSON, in the HTTP API's field names.
pub fn key_json(k: &KeyRecord, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    json!({
        "key_id": k.id,
        "guild_id": k.guild_id.to_string(),
        "name": k.name,
        "prefix": k.prefix,
        "environment": k.environment,
        "scopes": k.scopes.names(),
        "status": k.status(now),
        "created_at": k.created_at,
        "created_by": k.created_by,
        "last_used_at": k.last_used_at,
        "use_count": k.use_count,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "rate_limit_per_minute": k.rate_limit_per_minute,
        "allowed_ips": k.allowed_ips.entries(),
        "allowed_roles": k.allowed_roles.ids().iter().map(u64::to_string).collect::<Vec<_>>(),
        "suspended_at": k.suspended_at,
        "ban_budget": k.ban_budget,
        "role_budget": k.role_budget,
        "maker_id": k.maker_id.map(|m| m.to_string()),
    })
}
