//! The running application: database, service, HTTP listener, Discord bot
//! and background upkeep, started together and stopped together.
//!
//! **Process roles** (`run.only`, `guildkey run --only http|bot`): by
//! default one process runs both the listener and the bot. To scale out,
//! run N `--only http` listeners and one `--only bot` on one PostgreSQL
//! database:
//! - `--only http`: the listener with no gateway connection. It still calls
//!   Discord's REST API for writes (bans, roles) and ban checks, but has no
//!   gateway cache, so the guild facts the guard judges by (roles and their
//!   permissions and positions, the owner, the bot's own roles) and guild
//!   info are read over REST ([`crate::discord::rest`]) and cached per guild
//!   for [`GUILD_VIEW_TTL`] (30 s). The guard's rules are the same; what
//!   differs is freshness: a role that gains a dangerous permission is
//!   refused by such a listener within the TTL rather than from the next
//!   request on. A write Discord refuses with 403 drops the guild's entry at
//!   once. Ban checks answer from the ban lists the bot keeps, followed
//!   through the database (`service::ban_lists`); with no bot on the
//!   database they are cached 5 s and, with no gateway ban events, learn of
//!   bans made elsewhere only when that runs out; refusals the guard
//!   remembers last their 30 s (no role events to forget them).
//! - `--only bot`: the gateway bot (slash commands, buttons, the leak
//!   guard), the audit-channel outbox ([`outbox`]) and the reconcile of
//!   API writes left pending ([`reconcile`]), with no listener
//!   (`http.bind` is not bound). Only the bot posts audit entries: listeners
//!   record events in the shared database and the bot posts them (claims
//!   keep two bots from posting one twice), so a deployment needs one bot
//!   for audit posts to appear.
//!
//! Shutdown on SIGINT/SIGTERM: the listener stops accepting and finishes
//! in-flight requests, the bot disconnects, pending last-used times are
//! flushed, and the database is closed.

use std::sync::Arc;
use std::time::Duration;

use poise::serenity_prelude as serenity;
use tokio::sync::watch;

use crate::config::{Config, ProcessRole};
use crate::discord::rest::{RestGuildOps, GUILD_VIEW_TTL};
use crate::discord::{GuildOps, SerenityGuildOps};
use crate::service::actions::{BanCache, GuildActions};
use crate::service::guard::DiscordGuard;
use crate::service::health::{BotHealth, BotState};
use crate::service::{outbox, reconcile, KeyService};
use crate::store::Store;

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the application could not start, or stopped on a failure. The CLI
/// (which sits above this module) gives each its exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or wrong (exit 2).
    #[error("{0}")]
    Config(String),
    /// The database, the listener's address or Discord failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Opens and migrates the database named by the config.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    let db = &config.database;
    let url = &crate::store::with_tls_settings(&db.url, db.sslmode.as_deref(), db.sslrootcert.as_deref());
    let store = Store::connect(url).await.map_err(|e| database_error(url, e))?;
    store.migrate().await.map_err(|e| database_error(url, e))?;
    Ok(store)
}

/// `guildkey migrate`: opens and migrates the database named by the
/// config, then closes it.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    open_store(config).await?.close().await;
    Ok(())
}

/// `guildkey backup PATH`: a consistent copy of the SQLite database into the
/// new file `path`, safe while `run` is serving; returns its size in bytes.
pub async fn backup(config: &Config, path: &std::path::Path) -> Result<u64, StartError> {
    if crate::store::is_postgres_url(&config.database.url) {
        return Err(StartError::Failed(crate::store::POSTGRES_BACKUP_ADVICE.to_owned()));
    }
    let store = open_store(config).await?;
    let copied = store.backup_into(path).await;
    store.close().await;
    copied.map_err(|e| StartError::Failed(format!("{e:#}")))
}

/// The service on the configured database, for one operator command
/// (`guildkey keys …`), with no listener and no bot.
pub struct Operator {
    pub service: KeyService,
    store: Store,
}

impl Operator {
    /// Opens and migrates the database and loads the service on it.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let store = open_store(config).await?;
        let service = KeyService::new(store.clone(), config.keys.clone())
            .await
            .map_err(|e| database_error(&config.database.url, e))?;
        service.set_secrets(secrets_keys(config)?);
        service.set_roblox(&config.roblox);
        service.set_delivery_settings(delivery_settings(config));
        Ok(Self { service, store })
    }

    /// Closes the database. Call it on every path, failures included:
    /// closing is what checkpoints SQLite's WAL into the database file.
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// The keys guilds' credentials are sealed under, from `[secrets]`.
fn secrets_keys(config: &Config) -> Result<crate::service::credentials::SecretsKeys, StartError> {
    crate::service::credentials::SecretsKeys::from_config(&config.secrets).map_err(StartError::Config)
}

/// What delivering keys into Roblox Secrets needs from the configuration.
fn delivery_settings(config: &Config) -> crate::service::roblox::delivery::DeliverySettings {
    crate::service::roblox::delivery::DeliverySettings {
        open_cloud_base_url: config.roblox.open_cloud_base_url.clone(),
        public_url: config.http.public_url.clone(),
    }
}

/// A database that cannot be opened or migrated: say why and what to do.
pub fn database_error(url: &str, cause: anyhow::Error) -> StartError {
    let tls = cause.chain().any(|c| matches!(c.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Tls(_))))
        || format!("{cause:#}").contains("certificate");
    let advice = if crate::store::is_postgres_url(url) && tls {
        "check sslmode and that sslrootcert (database.sslrootcert or the URL's) holds the CA that signed \
         PostgreSQL's certificate, for the host name the URL gives"
    } else if crate::store::is_postgres_url(url) {
        "check that PostgreSQL is running and reachable and the user, password and database are right"
    } else {
        "check that the path exists and is writable"
    };
    StartError::Failed(format!(
        "{cause:#} (database.url = {}); {advice}, or set DATABASE_URL",
        crate::store::mask_url_password(url)
    ))
}

/// `guildkey run`: runs until a shutdown signal, then stops gracefully.
/// `run.only` (`--only`) picks the role: the listener, the bot, or both.
pub async fn run(config: Config) -> Result<(), StartError> {
    let role = config.run.only;
    let Some(token) = config.discord.token.clone() else {
        return Err(StartError::Config("discord.token: not set; put DISCORD_TOKEN in the environment or .env".into()));
    };
    // systemd gives a service 1,024 open files (soft) of 524,288 (hard):
    // every connection, database and Discord socket takes one.
    match crate::http::raise_open_files_limit() {
        Some((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-files limit to its hard limit")
        }
        Some((_, now)) => tracing::debug!(limit = now, "the open-files limit is at its hard limit"),
        None => {}
    }
    let store = open_store(&config).await?;
    let keys = KeyService::with_usage(store.clone(), config.keys.clone(), config.usage)
        .await
        .map_err(|e| database_error(&config.database.url, e))?;
    keys.set_secrets(secrets_keys(&config)?);
    keys.set_roblox(&config.roblox);
    keys.seal_webhook_secrets_at_start().await;
    keys.set_delivery_settings(delivery_settings(&config));
    match role {
        ProcessRole::Both => tracing::info!(role = role.as_str(), "starting the HTTP listener and the Discord bot"),
        ProcessRole::Http => tracing::info!(
            role = role.as_str(),
            "starting the HTTP listener alone: no gateway connection, guild facts from Discord's REST API \
             (cached {} s), audit-channel posts left to the bot",
            GUILD_VIEW_TTL.as_secs()
        ),
        ProcessRole::Bot => {
            tracing::info!(
                role = role.as_str(),
                "starting the Discord bot and the audit-channel posts alone: no HTTP listener"
            )
        }
    }

    // The bot's operations read guilds from its gateway cache, attached once
    // the client exists; a listener alone reads them over REST.
    let client = crate::discord::client::http_client(&config).map_err(StartError::Config)?;
    let (serenity_ops, ops): (_, Arc<dyn GuildOps>) = if role.runs_bot() {
        let serenity_ops = Arc::new(SerenityGuildOps::with_client(client.clone()));
        (Some(serenity_ops.clone()), serenity_ops)
    } else {
        let http = crate::discord::client::serenity_http(&config, token.expose(), client.clone());
        (None, Arc::new(RestGuildOps::new(Arc::new(http), client.clone())))
    };
    let health = Arc::new(BotHealth::new(if role.runs_bot() { BotState::Connecting } else { BotState::Off }));
    let bans = Arc::new(BanCache::default());
    let guard =
        Arc::new(DiscordGuard::new(config.discord.invalid_request_budget, config.discord.bot_invalid_request_budget));
    let actions = Arc::new(GuildActions::new(keys.clone(), ops.clone(), bans.clone(), guard.clone()));
    // Ban lists in memory: the bot's process syncs them and hears their
    // events; a listener alone follows them through the database.
    if role.runs_bot() {
        actions.ban_lists().set_syncs();
    }
    let ban_log_head = actions.ban_lists().load().await.map_err(|e| database_error(&config.database.url, e))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // The HTTP listener first: verification works whether or not Discord does.
    let mut listener = None;
    if role.runs_http() {
        let bound = tokio::net::TcpListener::bind(config.http.bind)
            .await
            .map_err(|e| StartError::Failed(format!("failed to listen on {} (http.bind): {e}", config.http.bind)))?;
        let addr =
            bound.local_addr().map_err(|e| StartError::Failed(format!("failed to read the bound address: {e}")))?;
        tracing::info!("listening on {addr}");
        let state = crate::http::AppState::new(actions.clone(), &config.http, health.clone());
        if let Some(file) = &config.leaks.github_public_keys_file {
            let keys = crate::service::github_keys::GithubKeys::load(file)
                .map_err(|e| StartError::Config(format!("leaks.github_public_keys_file: {e:#}")))?;
            let signatures =
                crate::http::GithubSignatures { keys: Arc::new(keys), refresh: Arc::new(tokio::sync::Notify::new()) };
            if let Some(url) = config.leaks.github_public_keys_url.clone() {
                let (keys, wake) = (signatures.keys.clone(), signatures.refresh.clone());
                tokio::spawn(crate::service::tasks::github_keys::run(keys, url, wake, stopped(stop_rx.clone())));
            }
            state.require_github_signatures(signatures);
        }
        let housekeeping = crate::http::spawn_housekeeping(&state);
        let router = crate::http::router(state);
        let server = tokio::spawn(crate::http::serve(bound, router, stopped(stop_rx.clone())));
        listener = Some((server, housekeeping));
    }

    // Then the bot: the gateway, and the audit channel's posts.
    let mut bot = None;
    if let Some(serenity_ops) = serenity_ops {
        let webhooks = crate::service::webhooks::WebhookService::new(keys.clone(), config.webhooks.clone());
        let makers = Arc::new(crate::service::makers::Makers::new(actions.clone()));
        let data = crate::bot::Data {
            keys: keys.clone(),
            actions: actions.clone(),
            bans,
            guard,
            webhooks: webhooks.clone(),
            health: health.clone(),
            makers: makers.clone(),
            features: Arc::new(crate::service::features::FeatureWatch::new(
                keys.clone(),
                config.discord.message_content_intent,
            )),
        };
        // Only the bot posts to audit channels: a listener alone records
        // events, and the bot sharing its database posts them (claimed, so
        // several bots would not post one twice).
        // It starts once the bot's client exists: a post tried before would
        // fail ("the bot is still starting") and be lost.
        let poster = {
            let (actions, ops, stop) = (actions.clone(), serenity_ops.clone(), stopped(stop_rx.clone()));
            let stop_too = stopped(stop_rx.clone());
            tokio::spawn(async move {
                let attached = ops.wait_attached();
                tokio::pin!(stop);
                tokio::select! {
                    // API writes left pending by a process killed mid-write
                    // are settled from what Discord shows, then posted.
                    () = attached => {
                        tokio::join!(reconcile::run(actions.clone(), stop_too), outbox::run(actions, stop));
                    }
                    () = &mut stop => {}
                }
            })
        };
        // The periodic check of key makers reads Discord: from the bot too,
        // once its client exists.
        let maker_check = {
            let (ops, stop) = (serenity_ops.clone(), stopped(stop_rx.clone()));
            tokio::spawn(async move {
                let attached = ops.wait_attached();
                tokio::pin!(stop);
                tokio::select! {
                    () = attached => crate::service::tasks::makers::run(makers, stop).await,
                    () = &mut stop => {}
                }
            })
        };
        // Webhook deliveries likewise come from the bot (claimed, each once);
        // they need no Discord.
        let hooks = tokio::spawn(crate::service::webhooks::run(webhooks, stopped(stop_rx.clone())));
        // Bans pushed into Roblox games go from the bot too (claimed, each once).
        let push_worker = crate::service::tasks::roblox_push::PushWorker::new(
            keys.clone(),
            &config.roblox.open_cloud_base_url,
            Duration::from_secs(config.roblox.push_give_up_seconds),
        );
        tokio::spawn(crate::service::tasks::roblox_push::run(push_worker, stopped(stop_rx.clone())));
        let shard_manager = Arc::new(std::sync::Mutex::new(None));
        let supervisor = Supervisor {
            config: config.clone(),
            token: token.clone(),
            client: client.clone(),
            data,
            ops: serenity_ops,
            health: health.clone(),
            shard_manager: shard_manager.clone(),
            stop: stop_rx.clone(),
        };
        let gateway = tokio::spawn(supervisor.run());
        bot = Some((gateway, shard_manager, poster, hooks, maker_check));
    }
    // Discord's refusals count for the whole bot: shared with every
    // instance on the database.
    let refusals = tokio::spawn(crate::service::tasks::refusals::run(actions.clone(), stopped(stop_rx.clone())));
    let ban_follower = (!role.runs_bot()).then(|| {
        let (lists, stop) = (actions.ban_lists().clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move { lists.follow(Some(ban_log_head), stop).await })
    });
    let upkeep = {
        let keys = keys.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { keys.run_upkeep(stop).await })
    };

    let bot_stopped = async {
        match bot.as_mut() {
            Some((gateway, ..)) => gateway.await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = shutdown_signal() => Ok(()),
        result = bot_stopped => match result {
            Ok(()) => Ok(()),
            Err(e) => Err(StartError::Failed(format!("the Discord bot crashed: {e}"))),
        },
    };

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let posters = match bot {
        Some((gateway, shard_manager, poster, hooks, maker_check)) => {
            let running = shard_manager.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(manager) = running {
                manager.shutdown_all().await;
            }
            let _ = gateway.await;
            let _ = maker_check.await;
            Some((poster, hooks))
        }
        None => None,
    };
    if let Some((server, housekeeping)) = listener {
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP listener failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP listener crashed"),
            Err(_) => tracing::warn!("in-flight requests did not finish in time"),
        }
        housekeeping.abort();
    }
    if let Some((poster, hooks)) = posters {
        let _ = poster.await;
        let _ = hooks.await; // attempts in flight finish
    }
    if let Some(follower) = ban_follower {
        let _ = follower.await;
    }
    let _ = upkeep.await; // flushes last-used times
    let _ = refusals.await; // shares the last refusals counted
    store.close().await;
    tracing::info!("stopped");
    outcome
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// The longest wait between two attempts to connect the bot.
const BOT_RETRY_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long was a success: the next failure waits
/// the shortest time again.
const BOT_SESSION_HEALTHY: Duration = Duration::from_secs(60);

/// Keeps the bot connected: connects, and when Discord refuses the token,
/// cannot be reached or the gateway stops, says why, waits (1 s, doubling
/// to [`BOT_RETRY_MAX`]) and connects again, until the process stops. The
/// listener keeps serving keys meanwhile, and `/healthz` reports the state.
struct Supervisor {
    config: Config,
    token: crate::config::Secret,
    /// The HTTP client for Discord's REST API (TLS roots, address).
    client: reqwest::Client,
    data: crate::bot::Data,
    ops: Arc<SerenityGuildOps>,
    health: Arc<BotHealth>,
    /// The running client's shard manager, for shutdown.
    shard_manager: Arc<std::sync::Mutex<Option<Arc<serenity::ShardManager>>>>,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    async fn run(mut self) {
        let mut delay = Duration::from_secs(1);
        while !*self.stop.borrow() {
            self.health.set(BotState::Connecting);
            let started = std::time::Instant::now();
            let (state, cause) = match self.session().await {
                Ok(()) if *self.stop.borrow() => return,
                Ok(()) => (BotState::Failed, "the gateway session ended".to_owned()),
                Err(e) => self.diagnose(&e),
            };
            if started.elapsed() >= BOT_SESSION_HEALTHY {
                delay = Duration::from_secs(1);
            }
            self.health.set(state);
            tracing::error!("{cause}; the listener keeps serving keys; connecting again in {} s", delay.as_secs());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
            delay = (delay * 2).min(BOT_RETRY_MAX);
        }
    }

    /// One session: asks Discord for the gateway (which tells a refused
    /// token or an unreachable Discord apart before any gateway traffic),
    /// then runs the gateway until it stops.
    async fn session(&self) -> serenity::Result<()> {
        let http = crate::discord::client::serenity_http(&self.config, self.token.expose(), self.client.clone());
        http.get_bot_gateway().await?;
        let framework = crate::bot::framework(self.data.clone(), self.config.discord.register_commands);
        let mut client = serenity::ClientBuilder::new_with_http(
            http,
            crate::bot::intents(self.config.discord.message_content_intent),
        )
        .framework(framework)
        .await?;
        self.ops.attach(client.http.clone(), client.cache.clone());
        *self.shard_manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.shard_manager.clone());
        if *self.stop.borrow() {
            return Ok(());
        }
        use crate::config::Shards;
        match (self.config.discord.shards, self.config.discord.shard_ids) {
            (Shards::Auto, _) => client.start_autosharded().await,
            // serenity's range is first..last with `last` included.
            (Shards::Count(total), Some((first, last))) => client.start_shard_range(first..last, total).await,
            (Shards::Count(total), None) => client.start_shards(total).await,
        }
    }

    /// The state a failure leaves the bot in, and one line naming the cause.
    fn diagnose(&self, e: &serenity::Error) -> (BotState, String) {
        let url = &self.config.discord.api_base_url;
        match e {
            serenity::Error::Gateway(serenity::GatewayError::InvalidAuthentication) => (
                BotState::TokenRefused,
                "Discord's gateway refused the bot token; check DISCORD_TOKEN (discord.token)".to_owned(),
            ),
            serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(answer)) if answer.status_code == 401 => (
                BotState::TokenRefused,
                format!("Discord refused the bot token (401 from {url}); check DISCORD_TOKEN (discord.token)"),
            ),
            serenity::Error::Http(serenity::HttpError::Request(cause)) => (
                BotState::Unreachable,
                format!("Discord could not be reached at {url} (discord.api_base_url): {}", request_cause(cause)),
            ),
            other => (BotState::Failed, format!("the Discord bot stopped: {other}")),
        }
    }
}

/// A request error's innermost cause ("connection refused"), never the
/// request's URL with its query.
fn request_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
