//! What guildkey asks of Discord on behalf of the API and the audit log,
//! behind one trait ([`GuildOps`]) so the service never sees serenity, and
//! its two implementations: on serenity's `Http` and gateway cache
//! ([`SerenityGuildOps`], a process running the bot), and on `Http` alone
//! with guild facts read over REST and cached briefly ([`rest::RestGuildOps`],
//! a listener started with `--only http`, which has no gateway connection).
//!
//! When REST goes through a proxy or test double, serenity's own
//! ratelimiter is off (the proxy owns rate limiting), so a 429 reaches us:
//! [`SerenityGuildOps`] waits and retries a few times before giving up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serenity::all::{
    Cache, ChannelId, Colour, CreateEmbed, CreateEmbedFooter, CreateMessage, GuildId, Http, HttpError, LightMethod,
    RoleId, Route, Timestamp, UserId,
};
use serenity::http::Request;

use crate::audit::{Action, AuditEvent};

pub mod rest;

/// A guild as the API shows it (from the gateway cache, or Discord's REST
/// API on an `--only http` listener).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GuildInfo {
    #[schema(example = "1000000000000000001")]
    pub id: String,
    pub name: String,
    pub member_count: u64,
    /// Icon hash, if the guild has an icon.
    pub icon: Option<String>,
}

/// Why Discord did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscordError {
    /// Discord answered with an error (Missing Permissions, Unknown Role…).
    #[error("{message} (Discord error {code}, HTTP {status})")]
    Refused { status: u16, code: i64, message: String },
    /// Discord could not be reached or kept failing.
    #[error("Discord is unavailable: {0}")]
    Unavailable(String),
}

impl DiscordError {
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Unavailable(_) => None,
        }
    }
}

/// Discord's error codes guildkey reacts to.
pub mod codes {
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    pub const UNKNOWN_MEMBER: i64 = 10007;
    pub const UNKNOWN_ROLE: i64 = 10011;
    pub const UNKNOWN_BAN: i64 = 10026;
    pub const MISSING_ACCESS: i64 = 50001;
    pub const MISSING_PERMISSIONS: i64 = 50013;
    pub const UNKNOWN_AUTOMOD_RULE: i64 = 10066;
}

/// Discord's permission bits guildkey reasons about.
pub mod permissions {
    pub const KICK_MEMBERS: u64 = 1 << 1;
    pub const BAN_MEMBERS: u64 = 1 << 2;
    pub const ADMINISTRATOR: u64 = 1 << 3;
    pub const MANAGE_CHANNELS: u64 = 1 << 4;
    pub const MANAGE_GUILD: u64 = 1 << 5;
    pub const MANAGE_ROLES: u64 = 1 << 28;
    pub const MANAGE_WEBHOOKS: u64 = 1 << 29;
    pub const MODERATE_MEMBERS: u64 = 1 << 40;
    /// Every permission (what the owner and an administrator resolve to).
    pub const ALL: u64 = u64::MAX;
}

/// A role as Discord describes it (gateway cache or REST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleFacts {
    pub permissions: u64,
    /// Higher is more powerful; `@everyone` is 0.
    pub position: u16,
    /// Managed by an integration (a bot's own role, a booster role).
    pub managed: bool,
}

/// The guild's hierarchy as the gateway cache (or a recent REST read) sees
/// it: enough to tell, before asking Discord, whether Discord would refuse
/// a write.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub guild_id: u64,
    pub owner_id: u64,
    pub bot_id: u64,
    /// The bot's own roles (without `@everyone`).
    pub bot_roles: Vec<u64>,
    /// Every role of the guild, `@everyone` (id = guild id) included.
    pub roles: std::collections::HashMap<u64, RoleFacts>,
}

impl Standing {
    /// Guild-level permissions of a member with these roles, as Discord
    /// resolves them: the owner and an administrator have every one.
    pub fn permissions_of(&self, user_id: u64, member_roles: &[u64]) -> u64 {
        if user_id == self.owner_id {
            return permissions::ALL;
        }
        let everyone = self.roles.get(&self.guild_id).map_or(0, |r| r.permissions);
        let bits = member_roles.iter().filter_map(|r| self.roles.get(r)).fold(everyone, |b, r| b | r.permissions);
        if bits & permissions::ADMINISTRATOR != 0 {
            permissions::ALL
        } else {
            bits
        }
    }

    /// The position of a member's highest role (0 with none).
    pub fn top_position(&self, member_roles: &[u64]) -> u16 {
        member_roles.iter().filter_map(|r| self.roles.get(r)).map(|r| r.position).max().unwrap_or(0)
    }

    pub fn bot_permissions(&self) -> u64 {
        self.permissions_of(self.bot_id, &self.bot_roles)
    }

    pub fn bot_top_position(&self) -> u16 {
        self.top_position(&self.bot_roles)
    }
}

/// The length of Discord's invalid-request window.
pub const INVALID_WINDOW: Duration = Duration::from_secs(600);

/// Discord's answers that count against its invalid-request limit (401,
/// 403 and 429: 10,000 in 10 minutes from one IP, and the bot is cut off
/// from the API for every guild), counted per guild and in all over the
/// last [`INVALID_WINDOW`]. The service reads it to stop calling Discord
/// for a guild that keeps getting refused.
#[derive(Default)]
pub struct InvalidAnswers {
    inner: std::sync::Mutex<InvalidInner>,
}

#[derive(Default)]
struct InvalidInner {
    /// Per guild, the times of its recent invalid answers, oldest first;
    /// at most [`InvalidAnswers::KEPT_PER_GUILD`].
    guilds: std::collections::HashMap<u64, std::collections::VecDeque<std::time::Instant>>,
    /// In all: (minute since start, count) for the last ten minutes.
    minutes: std::collections::VecDeque<(u64, u64)>,
    started: Option<std::time::Instant>,
    total: u64,
}

impl InvalidAnswers {
    /// More than any sane per-guild budget; bounds the memory a guild costs.
    pub const KEPT_PER_GUILD: usize = 1024;

    /// Counts one invalid answer (for a guild, if the request was for one).
    pub fn record(&self, guild_id: Option<u64>) {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock().expect("invalid answers lock poisoned");
        let started = *inner.started.get_or_insert(now);
        let minute = now.duration_since(started).as_secs() / 60;
        match inner.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => inner.minutes.push_back((minute, 1)),
        }
        while inner.minutes.front().is_some_and(|(m, _)| *m + 10 <= minute) {
            inner.minutes.pop_front();
        }
        inner.total += 1;
        if let Some(guild_id) = guild_id {
            if inner.guilds.len() >= 10_000 && !inner.guilds.contains_key(&guild_id) {
                inner.guilds.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < INVALID_WINDOW));
            }
            let times = inner.guilds.entry(guild_id).or_default();
            while times.front().is_some_and(|t| t.elapsed() >= INVALID_WINDOW) || times.len() >= Self::KEPT_PER_GUILD {
                times.pop_front();
            }
            times.push_back(now);
        }
    }

    /// A guild's invalid answers over the last window, and how long until
    /// the oldest of the newest `keep` of them leaves it (when the count
    /// would drop below `keep` again).
    pub fn recent(&self, guild_id: u64, keep: usize) -> (usize, Duration) {
        let mut inner = self.inner.lock().expect("invalid answers lock poisoned");
        let Some(times) = inner.guilds.get_mut(&guild_id) else { return (0, Duration::ZERO) };
        while times.front().is_some_and(|t| t.elapsed() >= INVALID_WINDOW) {
            times.pop_front();
        }
        let n = times.len();
        let leaves = n
            .checked_sub(keep.max(1))
            .and_then(|i| times.get(i))
            .map_or(Duration::ZERO, |t| INVALID_WINDOW.saturating_sub(t.elapsed()));
        (n, leaves)
    }

    /// Invalid answers in all over about the last ten minutes (a metric).
    pub fn recent_total(&self) -> u64 {
        let inner = self.inner.lock().expect("invalid answers lock poisoned");
        let Some(started) = inner.started else { return 0 };
        let minute = started.elapsed().as_secs() / 60;
        inner.minutes.iter().filter(|(m, _)| m + 10 > minute).map(|(_, n)| n).sum()
    }

    /// Invalid answers since start (a metric).
    pub fn total(&self) -> u64 {
        self.inner.lock().expect("invalid answers lock poisoned").total
    }
}

/// Discord as the service uses it. The guild facts (`guild_info`,
/// `standing`, `role_exists`) come from the gateway cache in a process that
/// runs the bot, and from Discord's REST API, cached for
/// [`rest::GUILD_VIEW_TTL`], in an `--only http` listener; the guard's rules
/// are applied to either the same way.
#[async_trait]
pub trait GuildOps: Send + Sync {
    /// The guild's name, icon and member count; `Ok(None)` if the bot is
    /// not in it; `Err` if Discord could not be asked (REST only).
    async fn guild_info(&self, guild_id: u64) -> Result<Option<GuildInfo>, DiscordError>;
    /// `Some(reason)` if the user is banned, `None` if not.
    async fn ban_status(&self, guild_id: u64, user_id: u64) -> Result<Option<Option<String>>, DiscordError>;
    async fn ban(
        &self,
        guild_id: u64,
        user_id: u64,
        delete_message_seconds: u32,
        audit_reason: &str,
    ) -> Result<(), DiscordError>;
    async fn unban(&self, guild_id: u64, user_id: u64, audit_reason: &str) -> Result<(), DiscordError>;
    /// Whether the guild has this role; `None` if this cannot tell (guild
    /// not cached, no cache, or Discord could not be asked).
    async fn role_exists(&self, _guild_id: u64, _role_id: u64) -> Option<bool> {
        None
    }
    /// The member's role ids; `None` if the user is not a member.
    async fn member_roles(&self, guild_id: u64, user_id: u64) -> Result<Option<Vec<u64>>, DiscordError>;
    /// Gives the member the role (`add`) or takes it away.
    async fn set_role(
        &self,
        guild_id: u64,
        user_id: u64,
        role_id: u64,
        add: bool,
        audit_reason: &str,
    ) -> Result<(), DiscordError>;
    /// Posts an audit event as an embed to a channel.
    async fn post_audit(&self, channel_id: u64, event: &AuditEvent) -> Result<(), DiscordError>;
    /// Creates the leak guard's AutoMod rule: messages matching `pattern`
    /// are blocked and, with `alert_channel`, reported there. Returns the
    /// rule's id.
    async fn create_leak_rule(
        &self,
        _guild_id: u64,
        _pattern: &str,
        _alert_channel: Option<u64>,
    ) -> Result<u64, DiscordError> {
        Err(DiscordError::Unavailable("AutoMod is not available".into()))
    }
    /// Deletes an AutoMod rule (gone already counts as done).
    async fn delete_automod_rule(&self, _guild_id: u64, _rule_id: u64) -> Result<(), DiscordError> {
        Err(DiscordError::Unavailable("AutoMod is not available".into()))
    }
    /// The guild's hierarchy. `Ok(None)`: not known yet, worth asking again
    /// in a moment (the gateway cache has not received the guild: the bot is
    /// starting or reconnecting, or is not in it). `Err`: Discord said the
    /// bot is not in the guild, or could not be asked (REST only).
    async fn standing(&self, _guild_id: u64) -> Result<Option<Standing>, DiscordError> {
        Ok(None)
    }
    /// The invalid answers Discord has given these operations.
    fn invalid_answers(&self) -> Option<&InvalidAnswers> {
        None
    }
}

/// [`GuildOps`] on serenity. Created before the Discord client exists (so
/// the HTTP listener can start first) and attached to it once built; until
/// then Discord-backed calls answer "unavailable".
#[derive(Default)]
pub struct SerenityGuildOps {
    http: std::sync::OnceLock<Arc<Http>>,
    /// The gateway cache; never set under [`rest::RestGuildOps`], which
    /// uses these operations for REST only.
    cache: std::sync::OnceLock<Arc<Cache>>,
    /// Sends requests itself when serenity's ratelimiter is off (a proxy or
    /// the test double), so a 429's `retry_after` can be read and honoured.
    raw: std::sync::OnceLock<reqwest::Client>,
    /// The last guild info seen in the cache, per guild. After a fresh
    /// identify, READY lists every guild as unavailable and serenity drops it
    /// from the cache until its GUILD_CREATE arrives; meanwhile this answers,
    /// so a reconnect never makes `GET /v1/guilds/{id}` say "not in guild".
    last_seen: std::sync::Mutex<std::collections::HashMap<u64, GuildInfo>>,
    /// Every 401, 403 and 429 Discord answered, by guild.
    invalid: InvalidAnswers,
}

/// Retries of a request Discord answered with 429 or 5xx.
const RETRIES: u32 = 2;
/// The longest 429 `retry_after` worth waiting for inside an API call;
/// beyond it the call fails at once rather than hold the caller.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// How long one request to Discord may take. With [`SEND_BUDGET`] it keeps
/// a ban (a check, then the ban) well inside the listener's 30-second limit,
/// so the caller hears "Discord did not answer" rather than a bare timeout.
pub const DISCORD_TIMEOUT: Duration = Duration::from_secs(8);
/// No retry starts that could end past this, counted from the first try.
const SEND_BUDGET: Duration = Duration::from_secs(12);

/// One failed try: why, and how long Discord asked us to wait (429).
struct Failed {
    error: DiscordError,
    retry_after: Option<Duration>,
}

impl From<DiscordError> for Failed {
    fn from(error: DiscordError) -> Self {
        Self { error, retry_after: None }
    }
}

fn unavailable(e: reqwest::Error) -> DiscordError {
    DiscordError::Unavailable(e.without_url().to_string())
}

impl SerenityGuildOps {
    /// Connects these operations to the client's REST handle and cache.
    pub fn attach(&self, http: Arc<Http>, cache: Arc<Cache>) {
        let _ = self.http.set(http);
        let _ = self.cache.set(cache);
    }

    /// REST alone, with no gateway cache: the guild facts answer "not known".
    fn rest_only(http: Arc<Http>) -> Self {
        let ops = Self::default();
        let _ = ops.http.set(http);
        ops
    }

    fn http(&self) -> Result<&Arc<Http>, DiscordError> {
        self.http.get().ok_or_else(|| DiscordError::Unavailable("the bot is still starting".into()))
    }

    /// One try of a request; its JSON body (`Null` for 204) on success.
    /// An answer Discord counts as invalid is counted for `guild`.
    async fn attempt(&self, guild: Option<u64>, request: Request<'static>) -> Result<serde_json::Value, Failed> {
        let outcome = self.attempt_once(request).await;
        if let Err(Failed { error: DiscordError::Refused { status: 401 | 403 | 429, .. }, .. }) = &outcome {
            self.invalid.record(guild);
        }
        outcome
    }

    async fn attempt_once(&self, request: Request<'static>) -> Result<serde_json::Value, Failed> {
        let http = self.http()?;
        let response = if http.ratelimiter.is_some() {
            // On Discord itself serenity's ratelimiter owns 429s.
            http.request(request).await.map_err(map_error)?
        } else {
            let client = self.raw.get_or_init(reqwest::Client::new);
            let built = request
                .build(client, http.token(), http.proxy.as_deref())
                .map_err(map_error)?
                .build()
                .map_err(unavailable)?;
            let response = client.execute(built).await.map_err(unavailable)?;
            if !response.status().is_success() {
                return Err(refusal(response).await);
            }
            response
        };
        let bytes = response.bytes().await.map_err(unavailable)?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Runs a request, retrying after a 429 (waiting its `retry_after`, if
    /// not too long) and after 5xx with a short backoff.
    async fn send(&self, guild: u64, make: impl Fn() -> Request<'static>) -> Result<serde_json::Value, DiscordError> {
        self.send_with(Some(guild), make, true).await
    }

    /// [`Self::send`]; when not `idempotent` (a new message) only a 429 is
    /// retried, since after a 5xx or a lost connection the message may
    /// already be there.
    async fn send_with(
        &self,
        guild: Option<u64>,
        make: impl Fn() -> Request<'static>,
        idempotent: bool,
    ) -> Result<serde_json::Value, DiscordError> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let Failed { error, retry_after } =
                match tokio::time::timeout(DISCORD_TIMEOUT, self.attempt(guild, make())).await {
                    Ok(Ok(body)) => return Ok(body),
                    Ok(Err(failed)) => failed,
                    // Not retried: Discord may have made the change all the same.
                    Err(_) => {
                        return Err(DiscordError::Unavailable(format!(
                            "Discord did not answer within {} s; the change may or may not have been made",
                            DISCORD_TIMEOUT.as_secs()
                        )))
                    }
                };
            let retryable = match &error {
                DiscordError::Refused { status: 429, .. } => true,
                DiscordError::Refused { status, .. } => idempotent && *status >= 500,
                DiscordError::Unavailable(_) => idempotent,
            };
            let wait = retry_after.unwrap_or(Duration::from_millis(500 * u64::from(attempt + 1)));
            let over_budget = started.elapsed() + wait + DISCORD_TIMEOUT > SEND_BUDGET;
            if !retryable || attempt >= RETRIES || wait > MAX_RETRY_WAIT || over_budget {
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(error = %error, attempt, wait_ms = wait.as_millis() as u64, "Discord request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Reads Discord's error body; for a 429 also how long to wait (the body's
/// `retry_after`, else the `Retry-After` header), said in the message too.
async fn refusal(response: reqwest::Response) -> Failed {
    let status = response.status().as_u16();
    let header_wait = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok());
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let mut message = body["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let retry_after = (status == 429)
        .then(|| body["retry_after"].as_f64().or(header_wait))
        .flatten()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
    if let Some(wait) = retry_after {
        message = format!("{message} Retry after {:.1} s.", wait.as_secs_f64());
    }
    let code = body["code"].as_i64().unwrap_or(0);
    Failed { error: DiscordError::Refused { status, code, message }, retry_after }
}

/// Adds `X-Audit-Log-Reason` so Discord's own audit log names the key.
fn with_reason(mut request: Request<'static>, reason: &str) -> Request<'static> {
    // Discord takes 1–512 URL-encoded UTF-8 characters.
    let truncated: String = reason.chars().take(512).collect();
    let headers = request.headers_mut().get_or_insert_with(Default::default);
    if let Ok(value) = url_encode(&truncated).parse() {
        headers.insert("X-Audit-Log-Reason", value);
    }
    request
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn map_error(e: serenity::Error) -> DiscordError {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => DiscordError::Refused {
            status: r.status_code.as_u16(),
            code: r.error.code as i64,
            message: r.error.message,
        },
        other => DiscordError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl GuildOps for SerenityGuildOps {
    async fn guild_info(&self, guild_id: u64) -> Result<Option<GuildInfo>, DiscordError> {
        Ok(self.cached_guild_info(guild_id))
    }

    async fn role_exists(&self, guild_id: u64, role_id: u64) -> Option<bool> {
        let cache = self.cache.get()?;
        let guild = cache.guild(GuildId::new(guild_id))?;
        Some(guild.roles.contains_key(&RoleId::new(role_id)))
    }

    async fn ban_status(&self, guild_id: u64, user_id: u64) -> Result<Option<Option<String>>, DiscordError> {
        let (g, u) = (GuildId::new(guild_id), UserId::new(user_id));
        match self.send(guild_id, || Request::new(Route::GuildBan { guild_id: g, user_id: u }, LightMethod::Get)).await
        {
            Ok(ban) => Ok(Some(ban["reason"].as_str().map(str::to_owned))),
            Err(e) if e.code() == Some(codes::UNKNOWN_BAN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn ban(
        &self,
        guild_id: u64,
        user_id: u64,
        delete_message_seconds: u32,
        audit_reason: &str,
    ) -> Result<(), DiscordError> {
        let body = serde_json::to_vec(&serde_json::json!({ "delete_message_seconds": delete_message_seconds }))
            .expect("JSON of plain values");
        let (g, u) = (GuildId::new(guild_id), UserId::new(user_id));
        self.send(guild_id, || {
            let put = Request::new(Route::GuildBan { guild_id: g, user_id: u }, LightMethod::Put);
            with_reason(put.body(Some(body.clone())), audit_reason)
        })
        .await
        .map(drop)
    }

    async fn unban(&self, guild_id: u64, user_id: u64, audit_reason: &str) -> Result<(), DiscordError> {
        let (g, u) = (GuildId::new(guild_id), UserId::new(user_id));
        self.send(guild_id, || {
            with_reason(Request::new(Route::GuildBan { guild_id: g, user_id: u }, LightMethod::Delete), audit_reason)
        })
        .await
        .map(drop)
    }

    async fn member_roles(&self, guild_id: u64, user_id: u64) -> Result<Option<Vec<u64>>, DiscordError> {
        let (g, u) = (GuildId::new(guild_id), UserId::new(user_id));
        let get = || Request::new(Route::GuildMember { guild_id: g, user_id: u }, LightMethod::Get);
        match self.send(guild_id, get).await {
            Ok(member) => Ok(Some(
                member["roles"]
                    .as_array()
                    .map(|roles| roles.iter().filter_map(|r| r.as_str()?.parse().ok()).collect())
                    .unwrap_or_default(),
            )),
            Err(e) if e.code() == Some(codes::UNKNOWN_MEMBER) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_role(
        &self,
        guild_id: u64,
        user_id: u64,
        role_id: u64,
        add: bool,
        audit_reason: &str,
    ) -> Result<(), DiscordError> {
        let route = Route::GuildMemberRole {
            guild_id: GuildId::new(guild_id),
            user_id: UserId::new(user_id),
            role_id: role_id.into(),
        };
        let method = if add { LightMethod::Put } else { LightMethod::Delete };
        self.send(guild_id, || with_reason(Request::new(route, method), audit_reason)).await.map(drop)
    }

    async fn post_audit(&self, channel_id: u64, event: &AuditEvent) -> Result<(), DiscordError> {
        // Through `send_with`, so a 429 is waited out rather than losing the post.
        let mut message = CreateMessage::new().embed(audit_embed(event));
        if let Some(buttons) = audit_buttons(event) {
            message = message.components(vec![buttons]);
        }
        let body = serde_json::to_vec(&message).expect("JSON of a message builder");
        let channel_id = ChannelId::new(channel_id);
        let post = || Request::new(Route::ChannelMessages { channel_id }, LightMethod::Post).body(Some(body.clone()));
        self.send_with(Some(event.guild_id), post, false).await.map(drop)
    }

    async fn create_leak_rule(
        &self,
        guild_id: u64,
        pattern: &str,
        alert_channel: Option<u64>,
    ) -> Result<u64, DiscordError> {
        let mut actions = vec![serde_json::json!({
            "type": 1,
            "metadata": { "custom_message": "This message holds a guildkey API key, so it was blocked. Never paste a key in Discord; rotate it if it was shown anywhere." }
        })];
        if let Some(channel) = alert_channel {
            actions.push(serde_json::json!({ "type": 2, "metadata": { "channel_id": channel.to_string() } }));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "name": "guildkey: block pasted API keys",
            "event_type": 1,
            "trigger_type": 1,
            "trigger_metadata": { "regex_patterns": [pattern] },
            "actions": actions,
            "enabled": true,
        }))
        .expect("JSON of plain values");
        let g = GuildId::new(guild_id);
        let post = || {
            let request = Request::new(Route::GuildAutomodRules { guild_id: g }, LightMethod::Post);
            with_reason(request.body(Some(body.clone())), "guildkey leak guard: block pasted API keys")
        };
        let rule = self.send_with(Some(guild_id), post, false).await?;
        rule["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| DiscordError::Unavailable("Discord's answer had no rule id".into()))
    }

    async fn delete_automod_rule(&self, guild_id: u64, rule_id: u64) -> Result<(), DiscordError> {
        let (g, r) = (GuildId::new(guild_id), serenity::all::RuleId::new(rule_id));
        let delete = || Request::new(Route::GuildAutomodRule { guild_id: g, rule_id: r }, LightMethod::Delete);
        match self.send(guild_id, delete).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(codes::UNKNOWN_AUTOMOD_RULE) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn standing(&self, guild_id: u64) -> Result<Option<Standing>, DiscordError> {
        Ok(self.cached_standing(guild_id))
    }

    fn invalid_answers(&self) -> Option<&InvalidAnswers> {
        Some(&self.invalid)
    }
}

impl SerenityGuildOps {
    /// The guild from the gateway cache; `None` if the bot is not in it.
    fn cached_guild_info(&self, guild_id: u64) -> Option<GuildInfo> {
        let cache = self.cache.get()?;
        let id = GuildId::new(guild_id);
        let mut last_seen = self.last_seen.lock().expect("guild info lock poisoned");
        let Some(guild) = cache.guild(id) else {
            // Unavailable (an outage or the gap after a fresh READY): the
            // bot is still in it, so the last known info stands. Gone for
            // good (GUILD_DELETE, kicked): forget it.
            if cache.unavailable_guilds().get(&id).is_some() {
                return last_seen.get(&guild_id).cloned();
            }
            last_seen.remove(&guild_id);
            return None;
        };
        let info = GuildInfo {
            id: guild.id.to_string(),
            name: guild.name.clone(),
            member_count: guild.member_count,
            icon: guild.icon.map(|h| h.to_string()),
        };
        last_seen.insert(guild_id, info.clone());
        Some(info)
    }

    /// The guild's hierarchy from the gateway cache; `None` until the cache
    /// holds the guild and the bot's member.
    fn cached_standing(&self, guild_id: u64) -> Option<Standing> {
        let cache = self.cache.get()?;
        let bot_id = cache.current_user().id;
        let guild = cache.guild(GuildId::new(guild_id))?;
        let bot = guild.members.get(&bot_id)?;
        Some(Standing {
            guild_id,
            owner_id: guild.owner_id.get(),
            bot_id: bot_id.get(),
            bot_roles: bot.roles.iter().map(|r| r.get()).collect(),
            roles: guild
                .roles
                .values()
                .map(|r| {
                    let facts =
                        RoleFacts { permissions: r.permissions.bits(), position: r.position, managed: r.managed };
                    (r.id.get(), facts)
                })
                .collect(),
        })
    }
}

/// The audit-channel embed: what happened, to what, by whom, when. Built
/// from stored fields only, so it can never hold a secret.
pub fn audit_embed(event: &AuditEvent) -> CreateEmbed {
    let colour = match event.action {
        Action::KeyCreated | Action::RoleAdded | Action::KeyResumed => Colour::new(0x57F287),
        Action::KeyRevoked | Action::KeyDeleted | Action::BanAdded | Action::DiscordPaused | Action::UsageSpike => {
            Colour::new(0xED4245)
        }
        Action::WebhookSet | Action::WebhookRemoved | Action::WebhookDisabled => Colour::new(0xFEE75C),
        Action::KeyRotated
        | Action::AuditChannelSet
        | Action::RoleRemoved
        | Action::KeySuspended
        | Action::LeakGuardSet => Colour::new(0xFEE75C),
        Action::BanRemoved => Colour::new(0x5865F2),
        Action::KeyExpiring => Colour::new(0xE67E22),
    };
    let mut title = match (event.action, event.details.get("within").and_then(|w| w.as_str())) {
        (Action::KeyExpiring, Some(within)) => format!("API key expires within {within}"),
        (action, _) => action.title().to_owned(),
    };
    if event.test {
        title.push_str(" (test key: dry run, nothing changed)");
    }
    let key = match (&event.key_name, &event.key_prefix) {
        // Within a field's 1,024 characters, with room for the prefix.
        (Some(name), Some(prefix)) => Some(format!("{} (`{prefix}`)", escape_within(name, 960))),
        _ => None,
    };
    let actor = match (event.actor_kind.as_str(), &key) {
        ("api_key", Some(k)) => format!("An API key: {k}"),
        _ => event.actor.clone(),
    };
    let mut embed = CreateEmbed::new()
        .title(title)
        .colour(colour)
        .field("By", actor, true)
        .footer(CreateEmbedFooter::new(format!("guildkey · event {}", event.id)));
    if let Ok(ts) = Timestamp::from_unix_timestamp(event.at.timestamp()) {
        embed = embed.timestamp(ts);
    }
    if event.action.as_str().starts_with("key.") || event.action == Action::UsageSpike {
        if let Some(k) = &key {
            embed = embed.field("Key", k, true);
        }
    }
    for (name, value) in detail_fields(event) {
        embed = embed.field(name, value, true);
    }
    if let Some(summary) = while_off_summary(event) {
        embed = embed.description(summary);
    }
    if event.action == Action::KeyExpiring {
        embed = embed.description(
            "Keys cannot be extended: create a replacement (`/apikey create`) and switch over before then. \
             An expired key stops working.",
        );
    }
    embed
}

/// For an audit channel set while posts were off: what happened meanwhile
/// (how many changes, since when, the latest few), so turning posts off and
/// on again cannot hide a change. Within an embed description's 4,096
/// characters.
fn while_off_summary(event: &AuditEvent) -> Option<String> {
    let off = event.details.get("while_off")?;
    let count = off["count"].as_u64().unwrap_or(0);
    let since = off["since"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let window = match since {
        Some(at) => format!("from <t:{}:f> to <t:{}:f>", at.timestamp(), event.at.timestamp()),
        None => format!("until <t:{}:f>", event.at.timestamp()),
    };
    // Actors are stored labels (`<@id>`, "An API key", "The operator CLI"), not typed text.
    let by = off["turned_off_by"].as_str().map(|b| format!(", turned off by {b}")).unwrap_or_default();
    let mut lines = vec![match count {
        0 => format!("**While audit posts were off** ({window}{by}): no changes."),
        1 => format!("**While audit posts were off** ({window}{by}): **1 change**:"),
        n => format!("**While audit posts were off** ({window}{by}): **{n} changes**, latest first:"),
    }];
    let recent = off["recent"].as_array().map(Vec::as_slice).unwrap_or_default();
    for e in recent {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str());
        let at = s("at").and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
        let mut line = format!(
            "• {}`{}`",
            at.map(|a| format!("<t:{}:R> ", a.timestamp())).unwrap_or_default(),
            s("action").unwrap_or("?")
        );
        if let (Some(name), Some(prefix)) = (s("key_name"), s("key_prefix")) {
            line.push_str(&format!(" {} (`{prefix}`)", escape_within(name, 80)));
        }
        if e.get("test").and_then(|t| t.as_bool()) == Some(true) {
            line.push_str(" (dry run)");
        }
        line.push_str(&format!(" by {}", s("actor").unwrap_or("?")));
        lines.push(line);
    }
    if count > recent.len() as u64 {
        lines.push(format!(
            "…and {} more: see `GET /v1/guilds/{}/audit-log` (scope audit.read), or `/apikey info` for one key.",
            count - recent.len() as u64,
            event.guild_id
        ));
    }
    Some(lines.join("\n"))
}

/// The prefix of the audit channel's buttons' custom ids:
/// `guildkey:resume:<key id>` and `guildkey:revoke:<key id>`.
pub const AUDIT_BUTTON_PREFIX: &str = "guildkey:";

/// Resume and Revoke buttons under a suspension guildkey itself made (the
/// circuit breaker), so an admin can answer it from the audit channel.
fn audit_buttons(event: &AuditEvent) -> Option<serenity::all::CreateActionRow> {
    use serenity::all::{ButtonStyle, CreateActionRow, CreateButton};
    if event.action != Action::KeySuspended || event.actor_kind != "system" {
        return None;
    }
    let key = event.key_id.as_deref()?;
    Some(CreateActionRow::Buttons(vec![
        CreateButton::new(format!("{AUDIT_BUTTON_PREFIX}resume:{key}")).label("Resume").style(ButtonStyle::Success),
        CreateButton::new(format!("{AUDIT_BUTTON_PREFIX}revoke:{key}")).label("Revoke").style(ButtonStyle::Danger),
    ]))
}

/// The details worth showing, in words.
fn detail_fields(event: &AuditEvent) -> Vec<(&'static str, String)> {
    let d = &event.details;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut out = Vec::new();
    if let Some(user) = s("user_id") {
        out.push(("User", format!("<@{user}> ({user})")));
    }
    if let Some(role) = s("role_id") {
        out.push(("Role", format!("<@&{role}>")));
    }
    if let Some(reason) = s("reason") {
        out.push(("Reason", escape_within(&reason, 1024)));
    }
    if let Some(scopes) = d.get("scopes").and_then(|v| v.as_array()) {
        let names: Vec<&str> = scopes.iter().filter_map(|v| v.as_str()).collect();
        out.push(("Scopes", names.join(", ")));
    }
    if let Some(env) = s("environment") {
        out.push(("Environment", env));
    }
    if event.action == Action::AuditChannelSet {
        let channel = match (s("channel_id"), s("previous_channel_id")) {
            (Some(c), _) => format!("<#{c}>"),
            (None, Some(was)) => format!("off (was <#{was}>)"),
            (None, None) => "off".to_owned(),
        };
        out.push(("Channel", channel));
    }
    if let Some(grace) = d.get("grace_seconds").and_then(|v| v.as_i64()).filter(|&g| g > 0) {
        out.push(("Old secret works for", crate::keys::Ttl::from_seconds(grace).to_string()));
    }
    if let Some(note) = s("outcome") {
        out.push(("Outcome", note));
    }
    if let Some(why) = s("why") {
        out.push(("Why", escape(&why)));
    }
    if let Some(source) = s("source") {
        out.push(("Reported by", escape_within(&source, 200)));
    }
    if let Some(url) = s("url") {
        // Shown as text, not a link: the reporter chose it.
        out.push(("Found at", escape_within(&url, 600)));
    }
    if let Some(webhook) = s("webhook") {
        out.push(("Webhook", escape_within(&webhook, 300)));
    }
    if let Some(events) = s("webhook_events") {
        out.push(("Events", escape_within(&events, 1024)));
    }
    if event.action == Action::KeyExpiring {
        if let Some(at) = s("expires_at").and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok()) {
            out.push(("Expires", format!("<t:{0}:R> (<t:{0}:f>)", at.timestamp())));
        }
    }
    if event.action == Action::UsageSpike {
        out.extend(spike_fields(d));
    }
    if let Some(until) = d.get("paused_until").and_then(|v| v.as_str()) {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(until) {
            out.push(("Resumes", format!("<t:{}:R>", at.timestamp())));
        }
    }
    out
}

/// A refusal spike's figures (`service::spike`): how many refusals in how
/// long, against the key's usual rate, by reason and client IP. Reasons and
/// addresses are guildkey's own words and parsed addresses, never typed text.
fn spike_fields(d: &serde_json::Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let refusals = d.get("refusals").and_then(|v| v.as_u64()).unwrap_or(0);
    let minutes = d.get("window_minutes").and_then(|v| v.as_u64()).unwrap_or(5);
    out.push(("Refusals", format!("{refusals} in {minutes} minutes")));
    if let Some(usual) = d.get("usual_per_window").and_then(|v| v.as_f64()) {
        out.push(("Usually", format!("{usual:.1} per {minutes} minutes")));
    }
    let list = |key: &str| -> Option<String> {
        let items = d.get(key)?.as_object()?;
        let lines: Vec<String> = items
            .iter()
            .take(5)
            .map(|(k, v)| format!("`{}` × {}", k.replace('`', "'"), v.as_u64().unwrap_or(0)))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    };
    if let Some(reasons) = list("reasons") {
        out.push(("Reasons", reasons));
    }
    if let Some(ips) = list("top_ips") {
        out.push(("Client IPs (this hour)", ips));
    }
    out.push((
        "What now",
        "`/apikey usage` and `/apikey requests` show what it is; `/apikey suspend` stops it".to_owned(),
    ));
    out
}

/// Shows user-supplied text (key names, ban reasons) as typed in Discord
/// messages and embeds: it must not form mentions (`@everyone`, `<@id>`,
/// `<#id>`, `<t:…>`), markdown (bold, strikethrough, spoilers, headings,
/// quotes, lists) or masked links (`[text](https://…)`, which would show
/// `text` and lead elsewhere), and characters that are invisible or reorder
/// text (zero-width, bidirectional controls, BOM, other controls) are shown
/// as `<U+202E>` rather than left to hide or disguise it. Markdown
/// characters get a backslash, which Discord shows as the character itself;
/// a backtick becomes `'` (it closes the inline code names sit beside).
/// The bot's own replies (`bot::render::safe`) use this too.
pub fn escape(s: &str) -> String {
    escape_within(s, usize::MAX)
}

/// [`escape`], at most `max` characters long (Discord's limit for where it
/// goes: escaping can make a text several times longer); a cut text ends in
/// `…`, never inside an escape.
pub fn escape_within(s: &str, max: usize) -> String {
    let mut pieces = Vec::with_capacity(s.len());
    let mut line_start = true;
    for c in s.chars() {
        let piece: std::borrow::Cow<'static, str> = match c {
            '`' => "'".into(),
            '@' => "@\u{200b}".into(),
            '\\' | '*' | '_' | '~' | '|' | '[' | ']' | '(' | ')' | '<' => format!("\\{c}").into(),
            // Headings, quotes, lists and subtext, at the start of a line.
            '#' | '>' | '-' | '+' if line_start => format!("\\{c}").into(),
            '\n' => "\n".into(),
            c if is_hidden(c) => format!("\\<U+{:04X}>", u32::from(c)).into(),
            c => c.to_string().into(),
        };
        pieces.push(piece);
        line_start = c == '\n' || (line_start && c == ' ');
    }
    let total: usize = pieces.iter().map(|p| p.chars().count()).sum();
    if total <= max {
        return pieces.concat();
    }
    let mut out = String::new();
    let mut len = 0;
    for piece in pieces {
        let n = piece.chars().count();
        if len + n + 1 > max {
            break;
        }
        out.push_str(&piece);
        len += n;
    }
    out.push('…');
    out
}

/// Characters that show nothing or change how the text around them reads.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen
                | '\u{034F}' // combining grapheme joiner
                | '\u{061C}' // Arabic letter mark
                | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
                | '\u{17B4}' | '\u{17B5}'
                | '\u{180B}'..='\u{180F}' // Mongolian selectors and vowel separator
                | '\u{200B}'..='\u{200F}' // zero-width space, joiners, LRM, RLM
                | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
                | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
                | '\u{FEFF}' // byte order mark
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
                | '\u{E0000}'..='\u{E007F}' // tags
        )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn a_masked_link_stays_text() {
        assert_eq!(escape("[click](https://evil.example)"), "\\[click\\]\\(https://evil.example\\)");
    }

    #[test]
    fn mentions_and_markdown_are_shown_as_typed() {
        let cases = [
            ("@everyone", "@\u{200b}everyone"),
            ("<@123> <#456> <t:0:R>", "\\<@\u{200b}123> \\<#456> \\<t:0:R>"),
            ("**bold** __u__ ~~s~~ ||spoiler||", "\\*\\*bold\\*\\* \\_\\_u\\_\\_ \\~\\~s\\~\\~ \\|\\|spoiler\\|\\|"),
            ("`code`", "'code'"),
            ("back\\slash", "back\\\\slash"),
            ("# heading", "\\# heading"),
            ("> quote\n- item\n-# small", "\\> quote\n\\- item\n\\-# small"),
            ("game-server #1 > 0", "game-server #1 > 0"),
            ("plain name 42", "plain name 42"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "escaping {input:?}");
        }
    }

    #[test]
    fn invisible_and_bidi_characters_are_made_visible() {
        let cases = [
            ("a\u{200B}b", "a\\<U+200B>b"),
            ("pay\u{202E}lmth.exe", "pay\\<U+202E>lmth.exe"),
            ("\u{FEFF}bom", "\\<U+FEFF>bom"),
            ("x\u{2066}y\u{2069}", "x\\<U+2066>y\\<U+2069>"),
            ("joiner\u{200D}", "joiner\\<U+200D>"),
            ("bell\u{7}", "bell\\<U+0007>"),
            ("tag\u{E0041}", "tag\\<U+E0041>"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "escaping {input:?}");
        }
        for c in ('\u{200B}'..='\u{200F}').chain('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert!(!escape(&format!("a{c}b")).contains(c), "U+{:04X} left in", u32::from(c));
        }
    }

    #[test]
    fn a_cut_text_ends_in_an_ellipsis_never_inside_an_escape() {
        use super::escape_within;
        assert_eq!(escape_within("abc", 3), "abc");
        assert_eq!(escape_within("abcd", 3), "ab…");
        assert_eq!(escape_within("a[b", 3), "a…", "not a dangling backslash");
        let hidden = "\u{200B}".repeat(64);
        let cut = escape_within(&hidden, 256);
        assert!(cut.chars().count() <= 256 && cut.ends_with("<U+200B>…"), "{cut}");
    }

    #[test]
    fn the_while_off_summary_counts_lists_escaped_and_points_to_the_rest() {
        let event = crate::audit::AuditEvent {
            id: 40,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::AuditChannelSet,
            actor: "<@7>".into(),
            actor_kind: "user".into(),
            key_id: None,
            key_name: None,
            key_prefix: None,
            test: false,
            details: serde_json::json!({
                "channel_id": "9",
                "while_off": {
                    "count": 12,
                    "since": "2026-01-01T09:00:00Z",
                    "turned_off_by": "<@8>",
                    "recent": [{
                        "id": 39, "at": "2026-01-01T09:59:00Z", "action": "key.revoked",
                        "actor": "The operator CLI", "key_name": "[x](https://evil.example)",
                        "key_prefix": "gk_live_Ab3d", "test": false
                    }],
                },
            }),
        };
        let summary = super::while_off_summary(&event).expect("a summary");
        let lines: Vec<&str> = summary.lines().collect();
        assert!(lines[0].contains("12 changes") && lines[0].contains("turned off by <@8>"), "{summary}");
        assert!(lines[0].contains(&format!("<t:{}:f>", 1_767_258_000)), "the window starts when posts went off");
        assert_eq!(
            lines[1],
            "• <t:1767261540:R> `key.revoked` \\[x\\]\\(https://evil.example\\) (`gk_live_Ab3d`) by The operator CLI"
        );
        assert!(lines[2].contains("11 more") && lines[2].contains("GET /v1/guilds/123/audit-log"), "{summary}");
        assert!(
            super::while_off_summary(&crate::audit::AuditEvent { details: serde_json::json!({}), ..event }).is_none()
        );
    }

    #[test]
    fn an_expiry_reminder_names_the_key_the_threshold_and_the_expiry_as_a_discord_timestamp() {
        let event = crate::audit::AuditEvent {
            id: 41,
            guild_id: 123,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().into(),
            action: crate::audit::Action::KeyExpiring,
            actor: "guildkey".into(),
            actor_kind: "system".into(),
            key_id: Some("key_abc".into()),
            key_name: Some("game *server*".into()),
            key_prefix: Some("gk_live_Ab3d".into()),
            test: false,
            details: serde_json::json!({
                "expires_at": "2026-01-03T10:00:00Z", "within": "7 days", "threshold_seconds": 604_800,
            }),
        };
        let embed = serde_json::to_value(super::audit_embed(&event)).unwrap();
        assert_eq!(embed["title"], "API key expires within 7 days");
        let field = |name: &str| {
            embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).map(|f| f["value"].clone())
        };
        assert_eq!(field("By").unwrap(), "guildkey");
        assert_eq!(field("Key").unwrap(), "game \\*server\\* (`gk_live_Ab3d`)");
        let at = 1_767_434_400; // 2026-01-03T10:00:00Z
        assert_eq!(field("Expires").unwrap(), format!("<t:{at}:R> (<t:{at}:f>)"));
        assert!(embed["description"].as_str().unwrap().contains("/apikey create"), "{embed}");
        let day = crate::audit::AuditEvent {
            details: serde_json::json!({"expires_at": "2026-01-03T10:00:00Z", "within": "1 day"}),
            ..event
        };
        assert_eq!(serde_json::to_value(super::audit_embed(&day)).unwrap()["title"], "API key expires within 1 day");
    }

    #[test]
    fn accented_letters_and_emoji_pass_through() {
        assert_eq!(escape("Crème brûlée 🍮 ключ"), "Crème brûlée 🍮 ключ");
    }
}
