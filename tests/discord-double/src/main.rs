//! `cargo run -p discord-double [-- --port 8787] [--guilds 10000]`: runs the double with the
//! demo world (plus that many synthetic guilds) for manual testing and benchmarks, on
//! 127.0.0.1:8787 unless told otherwise (`--port 0`: any free port). Prints the REST base URL,
//! the gateway URL and the demo ids, then reads commands from stdin (type `help`); when stdin
//! closes it keeps serving until Ctrl-C. Slash commands' answers print as a person reads them:
//! the text, then each embed's title, description and fields, then the buttons.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use discord_double::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const HELP: &str = "\
commands:
  info                                   URLs and demo ids
  calls                                  every REST call so far
  violations                             schema/protocol violations so far
  commands                               registered application commands
  slash <guild|dm> <user> <cmd> [sub] [name=value ...]
                                         use a slash command (values typed from the registration),
                                         e.g. slash 1000000000000000001 1200000000000000001 apikey list
  complete <guild> <user> <cmd> <sub> <option> <partial> [name=value ...]
                                         autocomplete request
  reply <interaction_id>                 the bot's answer to an interaction
  click <guild> <user> <message_id> <custom_id>
                                         click a button on a bot message
  messages <channel_id>                  messages in a channel
  bans <guild>                           bans in a guild
  seed-bans <guild> <count>              seeds that many bans at once (no events), for ban-list syncs
  say <guild> <channel> <user> <text>    a member sends a message (AutoMod applies)
  automod <guild>                        the guild's AutoMod rules
  dispatch <EVENT_NAME> <json>           send any gateway dispatch
  reconnect | invalid [resumable] | drop gateway op 7 / op 9 / dropped connection
  quit";

/// The first user id `seed-bans` bans.
const SEEDED_BANS_FROM: u64 = 1_500_000_000_000_000_000;

/// Where the double listens unless told otherwise (`--port`, `DISCORD_DOUBLE_PORT`).
const DEFAULT_PORT: u16 = 8787;

/// An answer as a person reads it in Discord: who sees it, the text (a
/// secret stays on one line), each embed's title, description and fields,
/// the buttons with their ids (for `click`), then the follow-ups.
fn readable(r: &InteractionReply) -> String {
    let mut out = Vec::new();
    let seen_by = if r.flags & 64 != 0 { "only the user sees this" } else { "everyone in the channel sees this" };
    out.push(format!("({seen_by}{})", r.message_id.map(|id| format!("; message {id}")).unwrap_or_default()));
    message_lines(&r.content, &r.embeds, &r.components, &mut out);
    for choice in &r.choices {
        out.push(format!("  choice: {} = {}", choice["name"].as_str().unwrap_or(""), choice["value"]));
    }
    for followup in &r.followups {
        out.push(format!("follow-up {}:", followup.id));
        message_lines(&followup.content, &followup.embeds, &followup.components, &mut out);
    }
    out.join("\n")
}

fn message_lines(content: &str, embeds: &[serde_json::Value], components: &[serde_json::Value], out: &mut Vec<String>) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    if !content.is_empty() {
        out.push(content.to_owned());
    }
    for embed in embeds {
        out.push(format!("┃ {}", text(&embed["title"])));
        for line in text(&embed["description"]).lines() {
            out.push(format!("┃ {line}"));
        }
        for field in embed["fields"].as_array().into_iter().flatten() {
            out.push(format!("┃ {}:", text(&field["name"])));
            for line in text(&field["value"]).lines() {
                out.push(format!("┃   {line}"));
            }
        }
        if let Some(footer) = embed["footer"]["text"].as_str() {
            out.push(format!("┃ ({footer})"));
        }
        if let Some(image) = embed["image"]["url"].as_str() {
            out.push(format!("┃ [image {image}]"));
        }
    }
    let mut buttons = Vec::new();
    for row in components {
        for c in row["components"].as_array().into_iter().flatten() {
            let label = c["label"].as_str().or(c["placeholder"].as_str()).unwrap_or("");
            buttons.push(format!("[{label}] {}", c["custom_id"].as_str().unwrap_or("")));
        }
    }
    if !buttons.is_empty() {
        out.push(format!("buttons: {}", buttons.join("  ")));
    }
}

fn info(double: &Double) -> String {
    format!(
        "discord-double running\n\
         REST base URL (discord.api_base_url / HttpBuilder::proxy): {}\n\
         REST API:    {}\n\
         gateway URL: {}\n\
         schema validation: {}\n\
         application id / bot user id: {APPLICATION_ID} / {BOT_USER_ID}\n\
         Demo Guild  {DEMO_GUILD_ID}: #general {GENERAL_CHANNEL_ID}, #audit-log {AUDIT_LOG_CHANNEL_ID}\n\
         \x20 roles: Admin {ADMIN_ROLE_ID}, Manager {MANAGER_ROLE_ID}, bot {BOT_ROLE_ID}, Verified {VERIFIED_ROLE_ID}\n\
         \x20 users: alice (owner, admin) {ALICE_ID}, morgan (manage server) {MORGAN_ID}, pat (plain) {PAT_ID}, dana (verified) {DANA_ID}\n\
         Other Guild {OTHER_GUILD_ID}: #general {OTHER_GENERAL_CHANNEL_ID}, oscar (owner, admin) {OSCAR_ID}\n\
         {}",
        double.base_url(),
        double.api_url(),
        double.gateway_url(),
        if double.validating() {
            "on"
        } else {
            "off (set DISCORD_OPENAPI_PATH to Discord's openapi.json to check every request against it)"
        },
        synthetic_info(double),
    )
}

/// The synthetic guilds line: how many, and the first and last id.
fn synthetic_info(double: &Double) -> String {
    let ids: Vec<u64> =
        double.config().guilds.iter().map(|g| g.id).filter(|id| synthetic_guild_index(*id).is_some()).collect();
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) => format!("synthetic guilds: {} (first {first}, last {last})", ids.len()),
        _ => "synthetic guilds: 0".to_string(),
    }
}

/// A guild count (`--guilds`, `DISCORD_DOUBLE_GUILDS`).
fn parse_count(s: &str, what: &str) -> anyhow::Result<u32> {
    s.trim().parse().map_err(|_| anyhow::anyhow!("{what} must be a number of guilds, not `{s}`"))
}

fn parse_id(s: Option<&str>, what: &str) -> anyhow::Result<u64> {
    s.ok_or_else(|| anyhow::anyhow!("missing {what}"))?.parse().map_err(|_| anyhow::anyhow!("{what} must be a number"))
}

async fn run(double: &Double, line: &str) -> anyhow::Result<String> {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else { return Ok(String::new()) };
    let wait = Duration::from_secs(10);
    Ok(match cmd {
        "help" | "?" => HELP.to_string(),
        "info" => info(double),
        "calls" => double.calls().iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n"),
        "violations" => {
            let v = double.violations();
            if v.is_empty() {
                "no violations".into()
            } else {
                v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
            }
        }
        "commands" => {
            let mut out = vec![format!("global: {}", serde_json::to_string_pretty(&double.registered_commands(None))?)];
            for g in &double.config().guilds {
                let cmds = double.registered_commands(Some(g.id));
                if !cmds.is_empty() {
                    out.push(format!("guild {}: {}", g.id, serde_json::to_string_pretty(&cmds)?));
                }
            }
            out.join("\n")
        }
        "slash" | "complete" => {
            let place = words.next().ok_or_else(|| anyhow::anyhow!("missing guild id or `dm`"))?;
            let user = parse_id(words.next(), "user id")?;
            let mut b = match (cmd, place) {
                ("slash", "dm") => double.dm_slash(user),
                ("slash", g) => double.slash(parse_id(Some(g), "guild id")?, user),
                (_, g) => double.autocomplete(parse_id(Some(g), "guild id")?, user),
            };
            let name = words.next().ok_or_else(|| anyhow::anyhow!("missing command name"))?;
            let rest: Vec<&str> = words.collect();
            let (sub, args) = match rest.first() {
                Some(s) if !s.contains('=') => (Some(*s), &rest[1..]),
                _ => (None, &rest[..]),
            };
            b = match sub {
                Some(s) => b.subcommand(name, s),
                None => b.command(name),
            };
            let mut args = args.iter();
            if cmd == "complete" {
                let option = args.next().ok_or_else(|| anyhow::anyhow!("missing option name"))?;
                let partial = args.next().copied().unwrap_or("");
                b = b.focused(option, partial);
            }
            for a in args {
                let (k, v) = a.split_once('=').ok_or_else(|| anyhow::anyhow!("options are name=value"))?;
                b = b.arg(k, v);
            }
            let sent = b.send().await?;
            match double.wait_for_response(&sent, wait).await {
                Ok(r) => format!("interaction {}\n{}", sent.id, readable(&r)),
                Err(e) => format!("interaction {} sent; {e}", sent.id),
            }
        }
        "reply" => {
            let id = parse_id(words.next(), "interaction id")?;
            let sent = SentInteraction { id, token: String::new(), channel_id: 0 };
            double.interaction_response(&sent).map_or_else(|| "no answer yet".to_owned(), |r| readable(&r))
        }
        "click" => {
            let guild = parse_id(words.next(), "guild id")?;
            let user = parse_id(words.next(), "user id")?;
            let message = parse_id(words.next(), "message id")?;
            let custom_id = words.next().ok_or_else(|| anyhow::anyhow!("missing custom_id"))?;
            let sent = double.click(guild, user, message, custom_id).await?;
            match double.wait_for_response(&sent, wait).await {
                Ok(r) => format!("interaction {}\n{}", sent.id, readable(&r)),
                Err(e) => format!("interaction {} sent; {e}", sent.id),
            }
        }
        "messages" => {
            let channel = parse_id(words.next(), "channel id")?;
            double
                .messages_in(channel)
                .iter()
                .map(|m| format!("{} {}", m.id, m.text().replace('\n', " | ")))
                .collect::<Vec<_>>()
                .join("\n")
        }
        "bans" => format!("{:?}", double.bans(parse_id(words.next(), "guild id")?)),
        "seed-bans" => {
            let guild = parse_id(words.next(), "guild id")?;
            let count = parse_id(words.next(), "count")?;
            double.seed_bans(guild, SEEDED_BANS_FROM, count, 1);
            format!("{} bans in the guild", double.bans(guild).len())
        }
        "say" => {
            let guild = parse_id(words.next(), "guild id")?;
            let channel = parse_id(words.next(), "channel id")?;
            let user = parse_id(words.next(), "user id")?;
            let text = words.collect::<Vec<_>>().join(" ");
            format!("{:#?}", double.post_user_message(guild, channel, user, &text)?)
        }
        "automod" => serde_json::to_string_pretty(&double.automod_rules(parse_id(words.next(), "guild id")?))?,
        "dispatch" => {
            let name = words.next().ok_or_else(|| anyhow::anyhow!("missing event name"))?;
            let json: String = words.collect::<Vec<_>>().join(" ");
            let data: serde_json::Value = serde_json::from_str(&json)?;
            format!("sent to {} session(s)", double.dispatch(name, data))
        }
        "reconnect" => {
            double.send_reconnect().await;
            "op 7 sent".into()
        }
        "invalid" => {
            let resumable = words.next() == Some("resumable");
            double.send_invalid_session(resumable).await;
            format!("op 9 sent (resumable: {resumable})")
        }
        "drop" => {
            double.drop_gateway().await;
            "connections dropped".into()
        }
        other => format!("unknown command `{other}`; type `help`"),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let mut port =
        std::env::var("DISCORD_DOUBLE_PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(DEFAULT_PORT);
    let mut guilds = match std::env::var("DISCORD_DOUBLE_GUILDS") {
        Ok(n) => parse_count(&n, "DISCORD_DOUBLE_GUILDS")?,
        Err(_) => 0,
    };
    let (mut bans, mut ban_list_rate) = (0u64, None::<u32>);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let value = args.next().unwrap_or_default();
                port = value.parse().map_err(|_| anyhow::anyhow!("--port must be a port number, not `{value}`"))?;
            }
            "--guilds" => guilds = parse_count(&args.next().unwrap_or_default(), "--guilds")?,
            "--bans" => bans = u64::from(parse_count(&args.next().unwrap_or_default(), "--bans")?),
            "--ban-list-rate" => {
                ban_list_rate = Some(parse_count(&args.next().unwrap_or_default(), "--ban-list-rate")?)
            }
            "-h" | "--help" => {
                println!(
                    "usage: discord-double [--port N] [--guilds N] [--bans N] [--ban-list-rate N]\n\
                     \x20   (env DISCORD_DOUBLE_PORT, DISCORD_DOUBLE_GUILDS)\n\
                     \x20 --port N     listen on 127.0.0.1:N (default {DEFAULT_PORT}; 0 for any free port)\n\
                     \x20 --guilds N   add N synthetic guilds to the demo world (default 0)\n\
                     \x20 --bans N     seed the demo guild with N bans (as `seed-bans`)\n\
                     \x20 --ban-list-rate N   GET /guilds/{{id}}/bans allows N pages a second\n\n{HELP}"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    discord_double::schema::QUIET_WHEN_ABSENT.store(true, std::sync::atomic::Ordering::Relaxed);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = DoubleConfig::demo().with_synthetic_guilds(guilds);
    if let Some(rate) = ban_list_rate {
        config.rate_limits =
            config.rate_limits.with_route("GET", "/guilds/{guild_id}/bans", rate, Duration::from_secs(1));
    }
    let double = Double::start_on(config, addr)
        .await
        .map_err(|e| anyhow::anyhow!("could not listen on {addr} ({e:#}); another double running? try --port 0"))?;
    if bans > 0 {
        double.seed_bans(DEMO_GUILD_ID, SEEDED_BANS_FROM, bans, 1);
        println!("seeded {bans} bans in the demo guild (user ids from {SEEDED_BANS_FROM})");
    }
    println!("{}\ntype `help` for commands", info(&double));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("> ");
        let _ = std::io::stdout().flush();
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() == "quit" || line.trim() == "exit" => break,
            Ok(Some(line)) => match run(&double, line.trim()).await {
                Ok(out) if !out.is_empty() => println!("{out}"),
                Ok(_) => {}
                Err(e) => println!("error: {e:#}"),
            },
            // stdin closed (e.g. started in the background): keep serving.
            _ => {
                println!("stdin closed; serving until killed");
                std::future::pending::<()>().await;
            }
        }
    }
    Ok(())
}

/// Logs to stderr; `RUST_LOG=discord_double=debug` shows every call (default: warnings, which
/// include every violation).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("discord_double=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
