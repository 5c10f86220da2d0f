//! `guildkey keys webhook set|remove|show --guild ID`: a guild's one webhook
//! from the operator's side, audited as "The operator CLI". `set` prints a
//! new signing secret alone on stdout (`SECRET=$(guildkey keys webhook set
//! …)`), once; everything else goes to stderr, or stdout for `show`.

use clap::Subcommand;
use serde_json::json;

use super::{parse_snowflake, when};
use crate::audit::Actor;
use crate::cli::Failure;
use crate::service::webhooks::{WebhookReport, WebhookService};
use crate::service::Error;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Set the guild's webhook (one per guild); prints a new signing secret once, alone on stdout
    #[command(after_help = SET_EXAMPLE)]
    Set {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
        /// Where to POST events: an https URL (http only with webhooks.allow_http)
        #[arg(long, value_name = "URL")]
        url: String,
        /// all, or a comma- or space-separated list of event types (key.created, ban.added, gateway.ban.added, …)
        #[arg(long, value_name = "TYPES")]
        events: String,
        /// Make a new signing secret (an existing webhook keeps its own otherwise)
        #[arg(long)]
        new_secret: bool,
    },
    /// Remove the guild's webhook: nothing more is sent, its delivery log goes too
    Remove {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
    },
    /// Show the guild's webhook (never its secret) and its latest deliveries
    Show {
        /// Discord guild (server) id
        #[arg(long, value_name = "ID", value_parser = parse_snowflake, allow_negative_numbers = true)]
        guild: u64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Shown under `guildkey keys webhook set --help`.
const SET_EXAMPLE: &str = r"Example:
  SECRET=$(guildkey keys webhook set --guild 123456789012345678 \
    --url https://example.com/guildkey --events key.created,key.revoked,gateway.ban.added)";

/// The one translation of the webhook service's errors: a bad option is
/// named by its flag (exit 2), the rest as every other command's.
fn failure(e: Error) -> Failure {
    match e {
        Error::Invalid(i) => Failure::usage(format!("--{}: {}", i.field.replace('_', "-"), i.message)),
        other => other.into(),
    }
}

pub async fn run(cmd: WebhookCommand, webhooks: &WebhookService) -> Result<(), Failure> {
    match cmd {
        WebhookCommand::Set { guild, url, events, new_secret } => {
            let set = webhooks.set(guild, &url, &events, new_secret, &Actor::Cli).await.map_err(failure)?;
            let w = &set.webhook;
            let events = w.events.names().join(", ");
            match &set.secret {
                Some(secret) => {
                    println!("{}", secret.expose());
                    eprintln!(
                        "set the webhook of guild {guild} to {} for {events}; the signing secret above is shown only once",
                        w.url
                    );
                }
                None => eprintln!(
                    "set the webhook of guild {guild} to {} for {events}{}; the signing secret is unchanged \
                     (--new-secret makes a new one)",
                    w.url,
                    if set.re_enabled { ", enabled again" } else { "" }
                ),
            }
            Ok(())
        }
        WebhookCommand::Remove { guild } => {
            let w = webhooks.remove(guild, &Actor::Cli).await.map_err(failure)?;
            eprintln!("removed the webhook of guild {guild} ({})", w.url);
            Ok(())
        }
        WebhookCommand::Show { guild, json } => {
            let report = webhooks.report(guild).await.map_err(failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report_json(&report)).expect("JSON of plain values"));
            } else {
                print_report(guild, &report);
            }
            Ok(())
        }
    }
}

fn report_json(r: &WebhookReport) -> serde_json::Value {
    let w = &r.webhook;
    let deliveries: Vec<_> = r
        .deliveries
        .iter()
        .map(|d| {
            json!({
                "message_id": d.message_id,
                "event_type": d.event_type,
                "audit_event_id": d.audit_event_id,
                "state": d.state.as_str(),
                "attempts": d.attempts,
                "created_at": d.created_at,
                "last_attempt_at": d.last_attempt_at,
                "last_status": d.last_status,
                "last_error": d.last_error,
                "next_attempt_at": d.next_attempt_at,
                "done_at": d.done_at,
            })
        })
        .collect();
    json!({
        "guild_id": w.guild_id.to_string(),
        "url": w.url,
        "events": w.events.names(),
        "enabled": w.enabled,
        "disabled_at": w.disabled_at,
        "disabled_reason": w.disabled_reason,
        "failed_messages_in_a_row": w.failed_messages,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
        "deliveries": deliveries,
    })
}

fn print_report(guild: u64, r: &WebhookReport) {
    let w = &r.webhook;
    let state = if w.enabled {
        "enabled".to_owned()
    } else {
        format!("disabled {}: {}", when(w.disabled_at), w.disabled_reason.as_deref().unwrap_or("-"))
    };
    println!("webhook of guild {guild}: {} ({state})", w.url);
    println!("events: {}", w.events.names().join(", "));
    println!("set {}, changed {}", when(Some(w.created_at)), when(Some(w.updated_at)));
    if w.enabled && w.failed_messages > 0 {
        println!(
            "{} message(s) in a row given up; {} disable the webhook",
            w.failed_messages,
            crate::service::webhooks::DISABLE_AFTER_FAILED_MESSAGES
        );
    }
    if r.deliveries.is_empty() {
        println!("no deliveries yet");
        return;
    }
    println!("latest deliveries, newest first:");
    for d in &r.deliveries {
        let last = match (d.last_status, &d.last_error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => format!("HTTP {s}"),
            (None, None) => "-".to_owned(),
        };
        println!(
            "  {}  {}  {}  {} attempt(s)  last: {}  queued {}",
            d.message_id,
            d.event_type,
            d.state.as_str(),
            d.attempts,
            last,
            when(Some(d.created_at))
        );
    }
}
