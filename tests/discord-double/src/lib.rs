//! A faithful local Discord for guildkey's tests: REST (`/api/v10`) and gateway (WebSocket,
//! JSON, v10) on one `127.0.0.1` port, a recorder of every call and frame, validation of every
//! request and response against Discord's OpenAPI description, fault injection, and helpers
//! that play the user (slash commands, autocomplete, button clicks).
//!
//! Point serenity at it with
//! `HttpBuilder::new(token).proxy(double.base_url()).ratelimiter_disabled(true)` and
//! `ClientBuilder::new_with_http(http, intents)`; serenity then asks `GET /api/v10/gateway`
//! and connects to [`Double::gateway_url`]. See `README.md` for a walkthrough.

pub mod automod;
pub mod clock;
pub mod config;
pub mod faults;
mod gateway;
pub mod interactions;
pub mod message_rules;
pub mod ratelimit;
pub mod recorder;
mod rest;
pub mod schema;
pub mod state;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use tokio::sync::watch;

pub use automod::PostedMessage;
pub use config::*;
pub use faults::{FaultRequest, FaultRule, Times};
pub use gateway::intents;
pub use gateway::{required_permissions, GatewayStats, IDENTIFY_WINDOW, SESSION_ENDING_CLOSE_CODES};
pub use interactions::{ClickTarget, SentInteraction, SlashBuilder};
pub use ratelimit::{RateLimitConfig, RouteLimit};
pub use recorder::{
    Direction, GatewayFrame, InteractionReply, RecordedCall, RecordedMessage, UploadedFile, Violation, ViolationKind,
};
pub use schema::SpecStatus;

use recorder::Recorder;
use state::State;

/// Shared by the HTTP handlers, the gateway connections and every [`Double`] handle.
pub(crate) struct Inner {
    pub cfg: DoubleConfig,
    pub addr: SocketAddr,
    pub state: Mutex<State>,
    pub recorder: Mutex<Recorder>,
    pub faults: Mutex<faults::Faults>,
    pub rate_limiter: Mutex<ratelimit::RateLimiter>,
    pub hub: Mutex<gateway::Hub>,
    pub changes: watch::Sender<u64>,
    pub spec: Option<&'static schema::Spec>,
    pub routes: Vec<schema::RouteTemplate>,
    /// REST requests being handled (not yet recorded).
    pub in_flight: std::sync::atomic::AtomicUsize,
}

impl Inner {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn hub(&self) -> MutexGuard<'_, gateway::Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Wakes every waiter (`wait_for_*`).
    pub fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
    pub fn violation(&self, v: Violation) {
        tracing::warn!(target: "discord_double", "violation: {v}");
        self.recorder().violations.push(v);
        self.bump();
    }
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/gateway", self.addr)
    }
    /// Polls `f` after every change until it returns `Some` or `timeout` passes.
    ///
    /// A handler changes the state before its call is recorded, so a result is only returned
    /// once no REST request is in flight (or after a 2 s grace period): whatever the state
    /// shows, `calls()` then shows too.
    pub async fn wait_until<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        use std::sync::atomic::Ordering;
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut settle: Option<tokio::time::Instant> = None;
        loop {
            if let Some(t) = f() {
                let quiet = self.in_flight.load(Ordering::SeqCst) == 0;
                if quiet || settle.is_some_and(|s| tokio::time::Instant::now() >= s) {
                    return Some(t);
                }
                settle.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            let wake = settle.map_or(deadline, |s| s.min(deadline));
            if tokio::time::timeout_at(wake, rx.changed()).await.is_err() && tokio::time::Instant::now() >= deadline {
                return f();
            }
        }
    }
}

/// Stops the server when the last [`Double`] handle is dropped.
struct Guard {
    inner: Arc<Inner>,
    server: tokio::task::AbortHandle,
    tls_server: tokio::task::AbortHandle,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.server.abort();
        self.tls_server.abort();
        self.inner.hub().close_all();
    }
}

/// The running double. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct Double {
    inner: Arc<Inner>,
    tls_addr: SocketAddr,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for Double {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Double").field("addr", &self.inner.addr).finish()
    }
}

impl Double {
    /// Starts the double on `127.0.0.1:0` (a free port).
    pub async fn start(cfg: DoubleConfig) -> anyhow::Result<Double> {
        Self::start_on(cfg, "127.0.0.1:0".parse().expect("address")).await
    }

    /// Starts the double on `addr`.
    ///
    /// Fails when Discord's OpenAPI file is missing and `CI=true` (outside CI a missing file
    /// only prints a notice and validation is skipped), or when the file is unusable.
    pub async fn start_on(cfg: DoubleConfig, addr: SocketAddr) -> anyhow::Result<Double> {
        let spec = match schema::spec_status() {
            SpecStatus::Loaded(spec) => Some(spec),
            SpecStatus::Absent(path) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    bail!(
                        "CI=true but Discord's OpenAPI description is missing at {} \
                         (set DISCORD_OPENAPI_PATH)",
                        path.display()
                    );
                }
                None
            }
            SpecStatus::Broken(e) => bail!("Discord's OpenAPI description is unusable: {e}"),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&cfg)),
            cfg,
            addr,
            recorder: Mutex::new(Recorder::default()),
            faults: Mutex::new(faults::Faults::default()),
            rate_limiter: Mutex::new(ratelimit::RateLimiter::default()),
            hub: Mutex::new(gateway::Hub::default()),
            changes,
            spec,
            routes: rest::implemented_routes(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let app = rest::router(inner.clone());
        let tls = tls::TlsListener {
            tcp: tokio::net::TcpListener::bind((addr.ip(), 0)).await.context("binding the TLS port")?,
            acceptor: tls::acceptor()?,
        };
        let tls_addr = tls.tcp.local_addr()?;
        let tls_app = app.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(target: "discord_double", "server stopped: {e}");
            }
        });
        let tls_server = tokio::spawn(async move {
            if let Err(e) = axum::serve(tls, tls_app).await {
                tracing::error!(target: "discord_double", "TLS server stopped: {e}");
            }
        });
        let guard = Arc::new(Guard {
            inner: inner.clone(),
            server: server.abort_handle(),
            tls_server: tls_server.abort_handle(),
        });
        Ok(Double { inner, tls_addr, _guard: guard })
    }

    /// `http://127.0.0.1:PORT`: give it to serenity's `HttpBuilder::proxy` (it replaces
    /// `https://discord.com` in every route).
    pub fn base_url(&self) -> String {
        self.inner.base_url()
    }

    /// The same API over TLS as `discord.com` (certificate from [`tls::CA_PEM`]'s CA): resolve
    /// `discord.com` here and serenity needs no proxy, so its ratelimiter stays on. The
    /// gateway stays at [`Self::gateway_url`].
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// `http://127.0.0.1:PORT/api/v10`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v10", self.inner.base_url())
    }

    /// `ws://127.0.0.1:PORT/gateway` (what `GET /api/v10/gateway` returns).
    pub fn gateway_url(&self) -> String {
        self.inner.gateway_url()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &DoubleConfig {
        &self.inner.cfg
    }

    /// Whether schema validation is active.
    pub fn validating(&self) -> bool {
        self.inner.spec.is_some()
    }

    // ----- gateway -------------------------------------------------------------------------

    /// Waits until a client has identified and received READY and every GUILD_CREATE, and is
    /// still connected.
    pub async fn wait_for_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.inner.wait_until(timeout, || self.inner.hub().ready_connected().then_some(())).await.ok_or_else(|| {
            anyhow!(
                "no client got READY within {timeout:?}; gateway: {:?}; REST calls: {:?}",
                self.gateway_stats(),
                self.calls().iter().map(|c| c.to_string()).collect::<Vec<_>>()
            )
        })
    }

    /// Waits until every shard `0..num_shards` has a client that identified with that shard
    /// (of `num_shards`), got READY and is still connected.
    pub async fn wait_for_shards(&self, num_shards: u32, timeout: Duration) -> anyhow::Result<()> {
        self.inner
            .wait_until(timeout, || self.inner.hub().shards_ready(num_shards).then_some(()))
            .await
            .ok_or_else(|| anyhow!("not every one of {num_shards} shards got READY within {timeout:?}"))
    }

    /// Counters: connections, identifies, resumes, heartbeats.
    pub fn gateway_stats(&self) -> GatewayStats {
        self.inner.hub().stats.clone()
    }

    /// Waits until `pred` holds for the gateway counters (e.g. a resume happened).
    pub async fn wait_for_gateway(
        &self,
        pred: impl Fn(&GatewayStats) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<GatewayStats> {
        self.inner
            .wait_until(timeout, || {
                let s = self.gateway_stats();
                pred(&s).then_some(s)
            })
            .await
            .ok_or_else(|| anyhow!("gateway condition not met within {timeout:?}: {:?}", self.gateway_stats()))
    }

    /// Every gateway frame so far, both directions.
    pub fn gateway_frames(&self) -> Vec<GatewayFrame> {
        self.inner.recorder().frames.clone()
    }

    /// Sends a dispatch (`op 0`) with the next sequence number to every session, e.g.
    /// `dispatch("GUILD_BAN_ADD", json!({"guild_id": "...", "user": {...}}))`. Sessions that
    /// are between connections get it when they resume. Discord's gates apply: an event
    /// needing a permission the bot lacks in its guild ([`required_permissions`]), or
    /// about a guild in an outage, goes nowhere. Returns how many sessions got it.
    pub fn dispatch(&self, event_name: &str, data: Value) -> usize {
        gateway::dispatch(&self.inner, event_name, data, None)
    }

    /// Closes every gateway connection without a close frame (like a network drop);
    /// serenity resumes.
    pub async fn drop_gateway(&self) {
        self.inner.hub().send_all(gateway::Out::Drop);
        tokio::task::yield_now().await;
    }

    /// Closes every gateway connection with a close frame `code` (e.g. 4000 resumable, 4004
    /// authentication failed). After 4007 (Invalid `seq`) or 4009 (Session timed out) the
    /// sessions are over, as on Discord: a Resume gets op 9 Invalid Session (`d: false`).
    pub async fn close_gateway(&self, code: u16, reason: &str) {
        gateway::close_all_with(&self.inner, code, reason);
        tokio::task::yield_now().await;
    }

    /// An outage takes a guild down: GUILD_DELETE `{"id", "unavailable": true}` (GUILDS
    /// intent), and until [`Double::guild_restored`] no event about it is dispatched and a new
    /// session gets the same GUILD_DELETE instead of its GUILD_CREATE. REST keeps answering
    /// for the guild (not modelled). Returns how many sessions were told.
    pub fn guild_outage(&self, guild_id: u64) -> usize {
        if !self.inner.state().unavailable_guilds.insert(guild_id) {
            return 0;
        }
        gateway::dispatch(
            &self.inner,
            "GUILD_DELETE",
            serde_json::json!({ "id": guild_id.to_string(), "unavailable": true }),
            Some(gateway::intents::GUILDS),
        )
    }

    /// The outage is over: the guild is available again and each session gets its
    /// GUILD_CREATE (as at Identify, per the session's intents). Returns how many sessions.
    pub fn guild_restored(&self, guild_id: u64) -> usize {
        if !self.inner.state().unavailable_guilds.remove(&guild_id) {
            return 0;
        }
        let st = self.inner.state();
        let Some(g) = st.guilds.get(&guild_id) else { return 0 };
        let (full, bot_only) = (st.guild_create_json(g, gateway::intents::GUILD_PRESENCES), st.guild_create_json(g, 0));
        drop(st);
        gateway::dispatch_with(&self.inner, "GUILD_CREATE", Some(gateway::intents::GUILDS), |intents| {
            Some(if intents & gateway::intents::GUILD_PRESENCES != 0 { full.clone() } else { bot_only.clone() })
        })
    }

    /// Sends op 7 Reconnect; serenity reconnects and resumes.
    pub async fn send_reconnect(&self) {
        gateway::send_op(&self.inner, 7, Value::Null);
        tokio::task::yield_now().await;
    }

    /// Sends op 9 Invalid Session with `d = resumable`; a non-resumable session is forgotten,
    /// so the client must identify again.
    pub async fn send_invalid_session(&self, resumable: bool) {
        gateway::invalidate_sessions(&self.inner, resumable);
        tokio::task::yield_now().await;
    }

    /// Whether heartbeats are acknowledged (op 11). Turning it off simulates a zombie
    /// connection: serenity notices at its next heartbeat and reconnects.
    pub fn set_heartbeat_ack(&self, ack: bool) {
        self.inner.hub().set_ack(ack);
    }

    // ----- interactions --------------------------------------------------------------------

    /// A slash command by `user_id` in `guild_id` (in its first text channel unless
    /// [`SlashBuilder::in_channel`] is used).
    pub fn slash(&self, guild_id: u64, user_id: u64) -> SlashBuilder {
        SlashBuilder::new(self.inner.clone(), Some(guild_id), user_id, false)
    }

    /// A slash command used in the bot's DM with `user_id` (no guild, no member).
    pub fn dm_slash(&self, user_id: u64) -> SlashBuilder {
        SlashBuilder::new(self.inner.clone(), None, user_id, false)
    }

    /// An autocomplete request (interaction type 4); mark the option being typed with
    /// [`SlashBuilder::focused`].
    pub fn autocomplete(&self, guild_id: u64, user_id: u64) -> SlashBuilder {
        SlashBuilder::new(self.inner.clone(), Some(guild_id), user_id, true)
    }

    /// Clicks the button `custom_id` on a message the bot posted (MESSAGE_COMPONENT, type 3,
    /// carrying the message object). `message` is a message id, a [`RecordedMessage`] or an
    /// [`InteractionReply`]. Fails when the message or an enabled button with that
    /// `custom_id` does not exist (Discord would not let the user click it).
    pub async fn click(
        &self,
        guild_id: u64,
        user_id: u64,
        message: impl Into<ClickTarget>,
        custom_id: &str,
    ) -> anyhow::Result<SentInteraction> {
        self.nudge().await;
        interactions::click(&self.inner, Some(guild_id), user_id, message.into(), custom_id)
    }

    /// [`Double::click`] in the bot's DM with `user_id`.
    pub async fn dm_click(
        &self,
        user_id: u64,
        message: impl Into<ClickTarget>,
        custom_id: &str,
    ) -> anyhow::Result<SentInteraction> {
        self.nudge().await;
        interactions::click(&self.inner, None, user_id, message.into(), custom_id)
    }

    /// Asks the client for a heartbeat (op 1, which Discord may send at any time) and waits
    /// (at most 2 s) until it arrives. serenity's shard runner registers new collectors only
    /// between two received frames, so after this round trip a collector the bot created
    /// before the nudge is guaranteed to see the next event.
    pub async fn nudge(&self) {
        let before = self.gateway_stats().heartbeats;
        if self.gateway_stats().open == 0 {
            return;
        }
        gateway::send_op(&self.inner, 1, Value::Null);
        let _ = self.wait_for_gateway(|s| s.heartbeats > before, Duration::from_secs(2)).await;
    }

    /// The bot's answer to an interaction so far (`None` before the callback).
    pub fn interaction_response(&self, interaction: &SentInteraction) -> Option<InteractionReply> {
        interactions::reply(&self.inner.state(), interaction.id)
    }

    /// Waits for the bot's answer: returns once the callback arrived and something is visible
    /// (a deferred response counts once `@original` was edited or a follow-up was sent).
    pub async fn wait_for_response(
        &self,
        interaction: &SentInteraction,
        timeout: Duration,
    ) -> anyhow::Result<InteractionReply> {
        self.wait_for_response_matching(interaction, |r| r.is_visible(), timeout).await
    }

    /// Waits until the answer satisfies `pred` (e.g. a later edit arrived).
    pub async fn wait_for_response_matching(
        &self,
        interaction: &SentInteraction,
        pred: impl Fn(&InteractionReply) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<InteractionReply> {
        let id = interaction.id;
        self.inner
            .wait_until(timeout, || interactions::reply(&self.inner.state(), id).filter(|r| pred(r)))
            .await
            .ok_or_else(|| {
                anyhow!(
                    "interaction {id}: no matching answer within {timeout:?}; so far: {:?}; \
                     calls: {:?}",
                    self.interaction_response(interaction),
                    self.calls().iter().map(|c| c.to_string()).collect::<Vec<_>>()
                )
            })
    }

    // ----- recorder ------------------------------------------------------------------------

    /// Every REST call so far, in order of arrival.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.inner.recorder().calls.clone()
    }

    /// Calls of `method` on `route` (template without `/api/v10`).
    pub fn calls_to(&self, method: &str, route: &str) -> Vec<RecordedCall> {
        self.calls().into_iter().filter(|c| c.is(method, route)).collect()
    }

    /// Waits for the first call (already recorded or future) matching `pred`.
    pub async fn wait_for_call(
        &self,
        pred: impl Fn(&RecordedCall) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RecordedCall> {
        self.inner
            .wait_until(timeout, || self.inner.recorder().calls.iter().find(|c| pred(c)).cloned())
            .await
            .ok_or_else(|| {
                anyhow!(
                    "no matching call within {timeout:?}; calls: {:?}",
                    self.calls().iter().map(|c| c.to_string()).collect::<Vec<_>>()
                )
            })
    }

    /// Forgets recorded calls, frames and violations (state is kept).
    pub fn clear_recorded(&self) {
        let mut r = self.inner.recorder();
        r.calls.clear();
        r.frames.clear();
        r.violations.clear();
    }

    /// Schema and protocol violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.inner.recorder().violations.clone()
    }

    /// Panics listing every violation, if any.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|v| format!("  - {v}")).collect();
            panic!("{} Discord API violation(s):\n{}", v.len(), list.join("\n"));
        }
    }

    // ----- faults --------------------------------------------------------------------------

    /// Adds a fault rule (first matching rule fires).
    pub fn fault(&self, rule: FaultRule) {
        self.inner.faults.lock().unwrap_or_else(|e| e.into_inner()).add(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    // ----- state -----------------------------------------------------------------------------

    /// Messages in a channel, oldest first (channel posts and non-ephemeral interaction
    /// replies; deleted ones excluded).
    pub fn messages_in(&self, channel_id: u64) -> Vec<RecordedMessage> {
        let st = self.inner.state();
        st.messages
            .values()
            .filter(|m| m.channel_id == channel_id && !m.deleted && m.flags & 64 == 0)
            .map(|m| interactions::recorded(&st, m))
            .collect()
    }

    /// Any message by id (ephemeral and deleted ones included).
    pub fn message(&self, message_id: u64) -> Option<RecordedMessage> {
        let st = self.inner.state();
        st.messages.get(&message_id).map(|m| interactions::recorded(&st, m))
    }

    /// Waits until `channel_id` has a message matching `pred`.
    pub async fn wait_for_message(
        &self,
        channel_id: u64,
        pred: impl Fn(&RecordedMessage) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RecordedMessage> {
        self.inner.wait_until(timeout, || self.messages_in(channel_id).into_iter().find(|m| pred(m))).await.ok_or_else(
            || {
                anyhow!(
                    "no matching message in channel {channel_id} within {timeout:?}; messages: {:?}",
                    self.messages_in(channel_id).iter().map(|m| m.text()).collect::<Vec<_>>()
                )
            },
        )
    }

    /// Bans in a guild: user id → reason.
    pub fn bans(&self, guild_id: u64) -> BTreeMap<u64, Option<String>> {
        self.inner.state().guilds.get(&guild_id).map(|g| g.bans.clone()).unwrap_or_default()
    }

    /// Adds a ban as if a moderator had banned `user_id` (no gateway event).
    pub fn add_ban(&self, guild_id: u64, user_id: u64, reason: Option<&str>) {
        let mut st = self.inner.state();
        st.user(user_id);
        if let Some(g) = st.guilds.get_mut(&guild_id) {
            g.bans.insert(user_id, reason.map(str::to_string));
            g.members.remove(&user_id);
        }
        drop(st);
        self.inner.bump();
    }

    /// Seeds `count` bans at once, user ids `first`, `first + step`, … (reason `seeded`), as if
    /// made long ago: no gateway event, and no users are made (they read as `user-<id>`). A
    /// guild of 100,000 bans is ready in milliseconds.
    pub fn seed_bans(&self, guild_id: u64, first: u64, count: u64, step: u64) {
        let mut st = self.inner.state();
        if let Some(g) = st.guilds.get_mut(&guild_id) {
            for i in 0..count {
                g.bans.insert(first + i * step.max(1), Some("seeded".to_owned()));
            }
        }
        drop(st);
        self.inner.bump();
    }

    /// A member's role ids (empty when not a member).
    pub fn member_roles(&self, guild_id: u64, user_id: u64) -> Vec<u64> {
        self.inner
            .state()
            .guilds
            .get(&guild_id)
            .and_then(|g| g.members.get(&user_id))
            .map(|m| m.roles.clone())
            .unwrap_or_default()
    }

    /// Whether `user_id` is a member of `guild_id`.
    pub fn is_member(&self, guild_id: u64, user_id: u64) -> bool {
        self.inner.state().guilds.get(&guild_id).is_some_and(|g| g.members.contains_key(&user_id))
    }

    /// Deletes a channel (later posts get 404 10003 Unknown Channel).
    pub fn delete_channel(&self, channel_id: u64) {
        let mut st = self.inner.state();
        for g in st.guilds.values_mut() {
            g.channels.remove(&channel_id);
        }
        st.deleted_channels.insert(channel_id);
        drop(st);
        self.inner.bump();
    }

    /// Adds a text channel to a guild.
    pub fn add_channel(&self, guild_id: u64, channel_id: u64, name: &str) {
        let mut st = self.inner.state();
        if let Some(g) = st.guilds.get_mut(&guild_id) {
            let position = g.channels.len() as u16;
            g.channels.insert(
                channel_id,
                state::Channel {
                    id: channel_id,
                    name: name.to_string(),
                    kind: 0,
                    position,
                    bot_can_send: true,
                    role_overwrites: Vec::new(),
                },
            );
        }
    }

    /// Sets (or, with `allow` and `deny` both 0, removes) a role's permission overwrite in a
    /// channel and tells the bot with a CHANNEL_UPDATE (GUILDS intent), as Discord does when an
    /// admin edits a channel's permissions. Returns the sessions it reached.
    pub fn set_role_overwrite(&self, guild_id: u64, channel_id: u64, role_id: u64, allow: u64, deny: u64) -> usize {
        let channel_json = {
            let mut st = self.inner.state();
            let Some(g) = st.guilds.get_mut(&guild_id) else { return 0 };
            let Some(c) = g.channels.get_mut(&channel_id) else { return 0 };
            c.role_overwrites.retain(|(id, _, _)| *id != role_id);
            if allow != 0 || deny != 0 {
                c.role_overwrites.push((role_id, allow, deny));
            }
            let c = c.clone();
            State::channel_json(g, &c)
        };
        gateway::dispatch(&self.inner, "CHANNEL_UPDATE", channel_json, Some(gateway::intents::GUILDS))
    }

    /// Denies (false) or allows (true) the bot SEND_MESSAGES in a channel, like a channel
    /// permission overwrite; posts then get 403 50013 Missing Permissions.
    pub fn set_bot_can_send(&self, channel_id: u64, can_send: bool) {
        let mut st = self.inner.state();
        for g in st.guilds.values_mut() {
            if let Some(c) = g.channels.get_mut(&channel_id) {
                c.bot_can_send = can_send;
            }
        }
    }

    /// Sets a member's roles (and resolved permissions) directly, no gateway event.
    pub fn set_member_roles(&self, guild_id: u64, user_id: u64, roles: &[u64]) {
        let mut st = self.inner.state();
        if let Some(g) = st.guilds.get_mut(&guild_id) {
            let perms = State::resolve(g, user_id, roles);
            if let Some(m) = g.members.get_mut(&user_id) {
                m.roles = roles.to_vec();
                m.permissions = perms;
            }
        }
    }

    /// A moderator (`by`) changes a member's roles in Discord's client: the roles (and resolved
    /// permissions) change, and the bot hears of it as Discord tells a bot: GUILD_MEMBER_UPDATE
    /// (GUILD_MEMBERS intent, privileged: most bots never get it) and
    /// GUILD_AUDIT_LOG_ENTRY_CREATE with action type 25 MEMBER_ROLE_UPDATE (GUILD_MODERATION
    /// intent, to a bot with View Audit Log). Returns how many sessions got the audit-log entry.
    pub fn edit_member_roles(&self, guild_id: u64, user_id: u64, roles: &[u64], by: u64) -> usize {
        let (member_json, entry_id, removed, added) = {
            let mut st = self.inner.state();
            let entry_id = st.ids.fresh();
            let Some(g) = st.guilds.get_mut(&guild_id) else { return 0 };
            let perms = State::resolve(g, user_id, roles);
            let Some(m) = g.members.get_mut(&user_id) else { return 0 };
            let removed: Vec<u64> = m.roles.iter().copied().filter(|r| !roles.contains(r)).collect();
            let added: Vec<u64> = roles.iter().copied().filter(|r| !m.roles.contains(r)).collect();
            m.roles = roles.to_vec();
            m.permissions = perms;
            let (g, m) = (&st.guilds[&guild_id], &st.guilds[&guild_id].members[&user_id]);
            (st.member_json(g, m, false), entry_id, removed, added)
        };
        let mut update = member_json;
        update["guild_id"] = serde_json::json!(guild_id.to_string());
        gateway::dispatch(&self.inner, "GUILD_MEMBER_UPDATE", update, Some(gateway::intents::GUILD_MEMBERS));
        let role_change = |key: &str, ids: &[u64]| {
            let st = self.inner.state();
            let names: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let name = st.guilds[&guild_id].roles.get(id).map(|r| r.name.clone()).unwrap_or_default();
                    serde_json::json!({ "id": id.to_string(), "name": name })
                })
                .collect();
            serde_json::json!({ "key": key, "new_value": names })
        };
        let mut changes = Vec::new();
        if !removed.is_empty() {
            changes.push(role_change("$remove", &removed));
        }
        if !added.is_empty() {
            changes.push(role_change("$add", &added));
        }
        let sent = gateway::dispatch(
            &self.inner,
            "GUILD_AUDIT_LOG_ENTRY_CREATE",
            serde_json::json!({
                "id": entry_id.to_string(),
                "guild_id": guild_id.to_string(),
                "action_type": 25,
                "target_id": user_id.to_string(),
                "user_id": by.to_string(),
                "changes": changes,
                "reason": null,
            }),
            Some(gateway::intents::GUILD_MODERATION),
        );
        self.inner.bump();
        sent
    }

    /// A member leaves the guild on their own: gone from its members, and only a bot with the
    /// privileged GUILD_MEMBERS intent hears GUILD_MEMBER_REMOVE (no audit-log entry: nobody
    /// acted on them). Returns how many sessions got the event.
    pub fn member_leaves(&self, guild_id: u64, user_id: u64) -> usize {
        let user_json = {
            let mut st = self.inner.state();
            let Some(g) = st.guilds.get_mut(&guild_id) else { return 0 };
            if g.members.remove(&user_id).is_none() {
                return 0;
            }
            st.user_json(user_id)
        };
        let sent = gateway::dispatch(
            &self.inner,
            "GUILD_MEMBER_REMOVE",
            serde_json::json!({ "guild_id": guild_id.to_string(), "user": user_json }),
            Some(gateway::intents::GUILD_MEMBERS),
        );
        self.inner.bump();
        sent
    }

    /// Changes a role's permission bits, re-resolves its members' permissions, and tells the
    /// bot with a GUILD_ROLE_UPDATE (GUILDS intent), as Discord does when an admin edits a role.
    pub fn set_role_permissions(&self, guild_id: u64, role_id: u64, permissions: u64) -> usize {
        let role_json = {
            let mut st = self.inner.state();
            let Some(g) = st.guilds.get_mut(&guild_id) else { return 0 };
            let Some(role) = g.roles.get_mut(&role_id) else { return 0 };
            role.permissions = permissions;
            let role_json = State::role_json(role);
            let members: Vec<(u64, Vec<u64>)> = g.members.values().map(|m| (m.user_id, m.roles.clone())).collect();
            for (user_id, roles) in members {
                let perms = State::resolve(g, user_id, &roles);
                if let Some(m) = g.members.get_mut(&user_id) {
                    m.permissions = perms;
                }
            }
            role_json
        };
        gateway::dispatch(
            &self.inner,
            "GUILD_ROLE_UPDATE",
            serde_json::json!({ "guild_id": guild_id.to_string(), "role": role_json }),
            Some(gateway::intents::GUILDS),
        )
    }

    // ----- Time -------------------------------------------------------------------------------

    /// Moves the double's clock ([`clock`]) on by `by`: interactions age (their 3 s ack
    /// deadline, their 15-minute token, [`interactions::TOKEN_LIFETIME`]) and new snowflakes
    /// (interaction and message ids) are dated that much later, as if `by` had passed.
    pub fn advance_clock(&self, by: Duration) {
        self.inner.state().ids.clock.advance(by);
        self.inner.bump();
    }

    /// How far [`Self::advance_clock`] has moved the clock in total.
    pub fn clock_offset(&self) -> Duration {
        self.inner.state().ids.clock.offset()
    }

    // ----- AutoMod ------------------------------------------------------------------------

    /// A guild's AutoMod rules as the double stores them (Discord's `KeywordRuleResponse`
    /// objects, in id order); empty for an unknown guild.
    pub fn automod_rules(&self, guild_id: u64) -> Vec<Value> {
        self.inner
            .state()
            .guilds
            .get(&guild_id)
            .map(|g| g.automod_rules.values().cloned().collect())
            .unwrap_or_default()
    }

    /// An admin deletes an AutoMod rule by hand (in Discord's client, not through the bot):
    /// the rule is gone and AUTO_MODERATION_RULE_DELETE is dispatched. False if the guild had
    /// no such rule.
    pub fn delete_automod_rule_by_hand(&self, guild_id: u64, rule_id: u64) -> bool {
        automod::delete_by_hand(&self.inner, guild_id, rule_id)
    }

    /// A member (`user_id`) sends `content` in `channel_id`, as from Discord's client. Every
    /// enabled keyword rule of the guild that matches acts: BLOCK_MESSAGE keeps the message
    /// from being created, SEND_ALERT_MESSAGE posts an alert (type 24) in its channel, and each
    /// action dispatches AUTO_MODERATION_ACTION_EXECUTION (`content`/`matched_content` only for
    /// sessions with MESSAGE_CONTENT). Unless blocked, the message is created and dispatched as
    /// MESSAGE_CREATE. Members with Administrator or Manage Server are exempt, as on Discord.
    /// Fails for an unknown guild, a channel outside it, a non-member or empty/over-long content.
    pub fn post_user_message(
        &self,
        guild_id: u64,
        channel_id: u64,
        user_id: u64,
        content: &str,
    ) -> anyhow::Result<PostedMessage> {
        automod::post_user_message(&self.inner, guild_id, channel_id, user_id, content)
    }

    /// Commands registered for a guild (`None`: global ones), as the double stores them.
    pub fn registered_commands(&self, guild_id: Option<u64>) -> Vec<Value> {
        let st = self.inner.state();
        match guild_id {
            Some(g) => st.guild_commands.get(&g).cloned().unwrap_or_default(),
            None => st.global_commands.clone(),
        }
    }

    /// Waits until a command named `name` is registered (globally or in `guild_id`).
    pub async fn wait_for_command(
        &self,
        guild_id: Option<u64>,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.inner
            .wait_until(timeout, || interactions::find_command(&self.inner.state(), guild_id, name))
            .await
            .ok_or_else(|| anyhow!("command /{name} not registered within {timeout:?}"))
    }
}
