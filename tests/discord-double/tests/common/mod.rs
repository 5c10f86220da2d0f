//! A minimal real bot (serenity 0.12 + poise 0.7) wired to the double, shared by the
//! integration tests: `/apikey create|revoke|audit|verify|ban`, registered globally at READY.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use discord_double::{Double, DoubleConfig, VERIFIED_ROLE_ID};
use poise::serenity_prelude as serenity;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Context<'a> = poise::Context<'a, Data, Error>;

pub struct Data;

pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=discord_double=debug,serenity=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Manage API keys.
#[poise::command(
    slash_command,
    guild_only,
    default_member_permissions = "MANAGE_GUILD",
    subcommands("create", "revoke", "audit", "verify", "ban")
)]
pub async fn apikey(_ctx: Context<'_>) -> Result<(), Error> {
    Ok(())
}

async fn scope_choices(_ctx: Context<'_>, partial: &str) -> serenity::CreateAutocompleteResponse {
    let choices = ["bans.read", "bans.write", "roles.write"]
        .into_iter()
        .filter(|s| s.starts_with(partial))
        .map(|s| serenity::AutocompleteChoice::new(s, s))
        .collect();
    serenity::CreateAutocompleteResponse::new().set_choices(choices)
}

/// Create a key.
#[poise::command(slash_command)]
async fn create(
    ctx: Context<'_>,
    #[description = "Key name"] name: String,
    #[description = "Scopes"]
    #[autocomplete = "scope_choices"]
    scopes: String,
    #[description = "Where to log"] channel: Option<serenity::GuildChannel>,
) -> Result<(), Error> {
    let channel = channel.map(|c| format!(" in #{}", c.name)).unwrap_or_default();
    ctx.send(poise::CreateReply::default().ephemeral(true).content(format!("created {name} with {scopes}{channel}")))
        .await?;
    Ok(())
}

/// Revoke a key, with confirmation buttons.
#[poise::command(slash_command)]
async fn revoke(ctx: Context<'_>, #[description = "Key"] key: String) -> Result<(), Error> {
    let buttons = serenity::CreateActionRow::Buttons(vec![
        serenity::CreateButton::new("revoke:confirm").label("Revoke").style(serenity::ButtonStyle::Danger),
        serenity::CreateButton::new("revoke:cancel").label("Cancel").style(serenity::ButtonStyle::Secondary),
    ]);
    let handle = ctx
        .send(poise::CreateReply::default().ephemeral(true).content(format!("Revoke {key}?")).components(vec![buttons]))
        .await?;
    let message = handle.message().await?;
    let click =
        serenity::ComponentInteractionCollector::new(ctx).message_id(message.id).timeout(Duration::from_secs(15)).await;
    let Some(click) = click else {
        handle.edit(ctx, poise::CreateReply::default().content("timed out").components(vec![])).await?;
        return Ok(());
    };
    click.create_response(ctx, serenity::CreateInteractionResponse::Acknowledge).await?;
    let text =
        if click.data.custom_id == "revoke:confirm" { format!("Revoked {key}") } else { "Cancelled".to_string() };
    handle.edit(ctx, poise::CreateReply::default().content(text).components(vec![])).await?;
    Ok(())
}

/// Post an audit embed to a channel.
#[poise::command(slash_command)]
async fn audit(ctx: Context<'_>, #[description = "Channel"] channel: serenity::GuildChannel) -> Result<(), Error> {
    ctx.defer_ephemeral().await?;
    let embed = serenity::CreateEmbed::new()
        .title("Key created")
        .description(format!("by <@{}>", ctx.author().id))
        .field("Key", "game (gk_live_ab12)", true)
        .colour(0x2ecc71);
    let posted = channel.id.send_message(ctx, serenity::CreateMessage::new().embed(embed)).await;
    let text = match posted {
        Ok(m) => format!("posted {}", m.id),
        Err(e) => format!("audit post failed: {e}"),
    };
    ctx.send(poise::CreateReply::default().content(text)).await?;
    Ok(())
}

/// Give a member the Verified role.
#[poise::command(slash_command)]
async fn verify(ctx: Context<'_>, #[description = "Member"] user: serenity::User) -> Result<(), Error> {
    let guild = ctx.guild_id().expect("guild_only");
    let result = ctx
        .http()
        .add_member_role(guild, user.id, serenity::RoleId::new(VERIFIED_ROLE_ID), Some("API key game (gk_live_ab12)"))
        .await;
    let text = match result {
        Ok(()) => "verified".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    ctx.send(poise::CreateReply::default().ephemeral(true).content(text)).await?;
    Ok(())
}

/// Ban a member.
#[poise::command(slash_command)]
async fn ban(ctx: Context<'_>, #[description = "Member"] user: serenity::User) -> Result<(), Error> {
    let guild = ctx.guild_id().expect("guild_only");
    let result = guild.ban_with_reason(ctx, user.id, 0, "spam ✓").await;
    let text = match result {
        Ok(()) => "banned".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    ctx.send(poise::CreateReply::default().ephemeral(true).content(text)).await?;
    Ok(())
}

/// A running bot.
pub struct Bot {
    pub cache: Arc<serenity::Cache>,
    pub http: Arc<serenity::Http>,
    pub shard_manager: Arc<serenity::ShardManager>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The serenity HTTP client pointed at the double.
pub fn http_for(double: &Double) -> serenity::Http {
    serenity::HttpBuilder::new("test-token").proxy(double.base_url()).ratelimiter_disabled(true).build()
}

/// Starts the bot against the double.
pub async fn start_bot(double: &Double) -> Bot {
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: vec![apikey()],
            on_error: |error| {
                Box::pin(async move {
                    eprintln!("poise error: {error}");
                })
            },
            ..Default::default()
        })
        .setup(|ctx, _ready, framework| {
            Box::pin(async move {
                poise::builtins::register_globally(ctx, &framework.options().commands).await?;
                Ok(Data)
            })
        })
        .build();
    let mut client =
        serenity::ClientBuilder::new_with_http(http_for(double), serenity::GatewayIntents::non_privileged())
            .framework(framework)
            .await
            .expect("client");
    let cache = client.cache.clone();
    let http = client.http.clone();
    let shard_manager = client.shard_manager.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = client.start().await {
            eprintln!("client stopped: {e}");
        }
    });
    Bot { cache, http, shard_manager, task }
}

/// The double with the demo world, a connected bot and its command registered.
pub async fn double_and_bot() -> (Double, Bot) {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.expect("double");
    let bot = start_bot(&double).await;
    double.wait_for_ready(WAIT).await.expect("ready");
    double.wait_for_command(None, "apikey", WAIT).await.expect("registered");
    (double, bot)
}

/// Raw REST calls to the double as the bot would make them (`Bot` token,
/// an audit-log reason), for tests of the REST surface itself.
#[allow(dead_code)] // not every test binary that includes `common` calls REST directly
pub struct Api {
    client: reqwest::Client,
    base: String,
    reason: &'static str,
}

#[allow(dead_code)]
impl Api {
    /// `reason` is the URL-encoded `X-Audit-Log-Reason` every call carries.
    pub fn new(double: &Double, reason: &'static str) -> Self {
        Api { client: reqwest::Client::new(), base: double.api_url(), reason }
    }

    /// Status and JSON body (`Null` when empty or not JSON).
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("Authorization", "Bot test-token")
            .header("X-Audit-Log-Reason", self.reason);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}
