//! [`SerenityGuildOps`]: [`GuildOps`] on serenity's `Http` and gateway
//! cache. Requests are sent here rather than through `Http::request`, so a
//! 429 always reaches us (serenity's ratelimiter would sleep out any
//! `retry_after`, however long): they wait and retry a few times within a
//! bounded time, or fail at once saying nothing was done. With serenity's
//! ratelimiter on (talking to Discord itself) each request still goes
//! through serenity's bucket for its route, shared with the bot's own
//! calls: an exhausted bucket is waited out when short, refused unsent
//! when not, and every answer's headers update it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serenity::all::{Cache, ChannelId, CreateMessage, GuildId, Http, HttpError, LightMethod, RoleId, Route, UserId};
use serenity::http::Request;

use super::embeds::{audit_buttons, audit_embed};
use super::{codes, BansPage, DiscordError, GuildInfo, GuildOps, InvalidAnswers, Overwrite, RoleFacts, Standing};
use crate::audit::AuditEvent;

/// [`GuildOps`] on serenity. Created before the Discord client exists (so
/// the HTTP listener can start first) and attached to it once built, and to
/// each new client after the bot connects again; until the first, Discord-backed
/// calls answer "unavailable".
#[derive(Default)]
pub struct SerenityGuildOps {
    http: std::sync::RwLock<Option<Arc<Http>>>,
    /// The gateway cache; never set under [`super::rest::RestGuildOps`], which
    /// uses these operations for REST only.
    cache: std::sync::RwLock<Option<Arc<Cache>>>,
    /// Told at the first [`Self::attach`] (see [`Self::wait_attached`]).
    attached: tokio::sync::Notify,
    /// Sends every request (the client serenity's `Http` was built with),
    /// so a 429's `retry_after` and scope can be read and honoured.
    raw: std::sync::OnceLock<reqwest::Client>,
    /// Until when Discord's global rate limit holds (a 429 with `global`).
    global_until: std::sync::Mutex<Option<Instant>>,
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

/// One failed try: why, how long Discord asked us to wait (429), and
/// whether Discord counts the answer toward its invalid-request limit (401,
/// 403 and 429, except a 429 with `X-RateLimit-Scope: shared`).
struct Failed {
    error: DiscordError,
    retry_after: Option<Duration>,
    invalid: bool,
    /// The 429 was Discord's global limit.
    global: bool,
}

impl From<DiscordError> for Failed {
    fn from(error: DiscordError) -> Self {
        Self { error, retry_after: None, invalid: false, global: false }
    }
}

/// What an answer's rate-limit headers said of its bucket.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pace {
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
}

impl Pace {
    fn of(headers: &reqwest::header::HeaderMap) -> Self {
        let read = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        Self {
            remaining: read("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: read("x-ratelimit-reset-after")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0))),
        }
    }
}

/// A rate limit that has `wait` to run, met before sending: nothing was
/// sent, so nothing was done (and Discord counted nothing).
fn not_sent(wait: Duration, global: bool) -> Failed {
    let which = if global { "Discord's global rate limit" } else { "Discord's rate limit for this request" };
    Failed {
        error: DiscordError::Refused {
            status: 429,
            code: 0,
            message: format!(
                "{which} has {:.1} s to run; the request was not sent, so nothing was done. Retry after {:.1} s.",
                wait.as_secs_f64(),
                wait.as_secs_f64()
            ),
        },
        retry_after: Some(wait),
        invalid: false,
        global,
    }
}

fn unavailable(e: reqwest::Error) -> DiscordError {
    DiscordError::Unavailable(e.without_url().to_string())
}

impl SerenityGuildOps {
    /// Operations that send through `client` (the one serenity's `Http` is
    /// built with: the same TLS roots and address for discord.com).
    pub fn with_client(client: reqwest::Client) -> Self {
        let ops = Self::default();
        let _ = ops.raw.set(client);
        ops
    }

    /// Connects these operations to the client's REST handle and cache.
    /// A client built after the bot reconnects replaces the one before.
    pub fn attach(&self, http: Arc<Http>, cache: Arc<Cache>) {
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = Some(http);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(cache);
        self.attached.notify_waiters();
    }

    /// Resolves once a client is attached: work that needs Discord (the
    /// audit outbox) waits for it rather than fail while the bot starts.
    pub async fn wait_attached(&self) {
        loop {
            let notified = self.attached.notified();
            if self.http.read().unwrap_or_else(|e| e.into_inner()).is_some() {
                return;
            }
            notified.await;
        }
    }

    /// REST alone, with no gateway cache: the guild facts answer "not known".
    pub(super) fn rest_only(http: Arc<Http>, client: reqwest::Client) -> Self {
        let ops = Self::with_client(client);
        *ops.http.write().unwrap_or_else(|e| e.into_inner()) = Some(http);
        ops
    }

    fn http(&self) -> Result<Arc<Http>, DiscordError> {
        self.http
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| DiscordError::Unavailable("the bot is still starting".into()))
    }

    fn cache(&self) -> Option<Arc<Cache>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One try of a request; its JSON body (`Null` for 204) on success.
    /// An answer Discord counts as invalid is counted for `guild`. `sent`
    /// turns true when the request leaves (after any rate-limit wait).
    async fn attempt(
        &self,
        guild: Option<u64>,
        request: Request<'static>,
        sent: &AtomicBool,
    ) -> Result<(serde_json::Value, Pace), Failed> {
        let outcome = self.attempt_once(request, sent).await;
        if let Err(Failed { invalid: true, .. }) = &outcome {
            self.invalid.record(guild);
        }
        outcome
    }

    async fn attempt_once(
        &self,
        request: Request<'static>,
        sent: &AtomicBool,
    ) -> Result<(serde_json::Value, Pace), Failed> {
        let http = self.http()?;
        let client = self.raw.get_or_init(reqwest::Client::new).clone();
        // serenity's bucket for this route, held (as serenity holds it)
        // from the check to the answer's headers.
        let bucket = match &http.ratelimiter {
            Some(ratelimiter) => {
                let key = request.route_ref().ratelimiting_bucket();
                Some(Arc::clone(ratelimiter.routes().write().await.entry(key).or_default()))
            }
            None => None,
        };
        let mut held = match &bucket {
            Some(bucket) => Some(bucket.lock().await),
            None => None,
        };
        if let Some(wait) = self.global_wait() {
            if wait > MAX_RETRY_WAIT {
                return Err(not_sent(wait, true));
            }
            tokio::time::sleep(wait).await;
        }
        if let Some(ratelimit) = held.as_mut() {
            let wait = ratelimit.reset().and_then(|reset| reset.duration_since(SystemTime::now()).ok());
            if let Some(wait) = wait.filter(|_| ratelimit.remaining() == 0) {
                if wait > MAX_RETRY_WAIT {
                    return Err(not_sent(wait, false));
                }
            }
            // Waits out a short exhausted bucket, and counts this request.
            ratelimit.pre_hook(&request, &|_| {}).await;
        }
        let built = request
            .clone()
            .build(&client, http.token(), http.proxy.as_deref())
            .map_err(map_error)?
            .build()
            .map_err(unavailable)?;
        sent.store(true, Ordering::SeqCst);
        let response = client.execute(built).await.map_err(unavailable)?;
        if let Some(ratelimit) = held.as_mut() {
            update_bucket(ratelimit, &request, &response).await;
        }
        drop(held);
        if !response.status().is_success() {
            let failed = refusal(response).await;
            if let (true, Some(wait)) = (failed.global, failed.retry_after) {
                *self.global_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + wait);
            }
            return Err(failed);
        }
        let pace = Pace::of(response.headers());
        let bytes = response.bytes().await.map_err(unavailable)?;
        Ok((serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), pace))
    }

    /// How long Discord's global rate limit still holds, if it does.
    fn global_wait(&self) -> Option<Duration> {
        let until = (*self.global_until.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some(until.saturating_duration_since(Instant::now())).filter(|w| !w.is_zero())
    }

    /// Runs a request, retrying after a 429 (waiting its `retry_after`, if
    /// not too long) and after 5xx with a short backoff.
    pub(super) async fn send(
        &self,
        guild: u64,
        make: impl Fn() -> Request<'static>,
    ) -> Result<serde_json::Value, DiscordError> {
        self.send_with(Some(guild), make, true).await
    }

    /// [`Self::send`]; when not `idempotent` (a new message) only a 429 is
    /// retried, since after a 5xx or a lost connection the message may
    /// already be there.
    pub(super) async fn send_with(
        &self,
        guild: Option<u64>,
        make: impl Fn() -> Request<'static>,
        idempotent: bool,
    ) -> Result<serde_json::Value, DiscordError> {
        self.send_paced(guild, make, idempotent).await.map(|(body, _)| body)
    }

    /// [`Self::send_with`], also answering what the answer's rate-limit
    /// headers said (a paged read paces itself by them).
    pub(super) async fn send_paced(
        &self,
        guild: Option<u64>,
        make: impl Fn() -> Request<'static>,
        idempotent: bool,
    ) -> Result<(serde_json::Value, Pace), DiscordError> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let sent = AtomicBool::new(false);
            let Failed { error, retry_after, .. } =
                match tokio::time::timeout(DISCORD_TIMEOUT, self.attempt(guild, make(), &sent)).await {
                    Ok(Ok(body)) => return Ok(body),
                    Ok(Err(failed)) => failed,
                    // Still waiting for a rate limit: never sent.
                    Err(_) if !sent.load(Ordering::SeqCst) => {
                        return Err(DiscordError::Unavailable(format!(
                            "Discord's rate limits kept the request waiting {} s; it was not sent, so nothing was done",
                            DISCORD_TIMEOUT.as_secs()
                        )))
                    }
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

/// Brings serenity's bucket up to date with an answer's headers. A 429's
/// `Retry-After` is left out: serenity would sleep it out, and the retry is
/// ours to decide.
async fn update_bucket(ratelimit: &mut serenity::http::Ratelimit, request: &Request<'_>, response: &reqwest::Response) {
    let mut headers = response.headers().clone();
    headers.remove("retry-after");
    let mut seen = axum::http::Response::new(Vec::<u8>::new());
    *seen.status_mut() = response.status();
    *seen.headers_mut() = headers;
    // A malformed header leaves the bucket as it was.
    let _ = ratelimit.post_hook(&reqwest::Response::from(seen), request, &|_| {}, false).await;
}

/// Reads Discord's error body; for a 429 also how long to wait (the body's
/// `retry_after`, else the `Retry-After` header), said in the message too,
/// and whether Discord counts it as invalid (not with scope `shared`).
async fn refusal(response: reqwest::Response) -> Failed {
    let status = response.status().as_u16();
    let headers = response.headers();
    let header_wait = headers.get("retry-after").and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok());
    let shared = headers.get("x-ratelimit-scope").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"shared"));
    let global_header = headers.get("x-ratelimit-global").is_some();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let mut message = body["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let retry_after = (status == 429)
        .then(|| body["retry_after"].as_f64().or(header_wait))
        .flatten()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
    if let Some(wait) = retry_after {
        message = format!("{message} Retry after {:.1} s; nothing was done.", wait.as_secs_f64());
    }
    let code = body["code"].as_i64().unwrap_or(0);
    let invalid = matches!(status, 401 | 403) || (status == 429 && !shared);
    let global = status == 429 && (global_header || body["global"].as_bool() == Some(true));
    Failed { error: DiscordError::Refused { status, code, message }, retry_after, invalid, global }
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
        let cache = self.cache()?;
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

    async fn bans_page(&self, guild_id: u64, after: u64, limit: u32) -> Result<BansPage, DiscordError> {
        // serenity's `get_bans` takes a `u8` limit (at most 255): the route is
        // asked directly, for Discord's 1,000 a page.
        let g = GuildId::new(guild_id);
        let params = vec![("limit", limit.clamp(1, 1000).to_string()), ("after", after.to_string())];
        let list = || Request::new(Route::GuildBans { guild_id: g }, LightMethod::Get).params(Some(params.clone()));
        let (body, pace) = self.send_paced(Some(guild_id), list, true).await?;
        let bans = body
            .as_array()
            .ok_or_else(|| DiscordError::Unavailable("Discord's ban list was not a list".into()))?
            .iter()
            .map(|ban| {
                let user = ban["user"]["id"].as_str()?.parse().ok()?;
                Some((user, ban["reason"].as_str().map(str::to_owned)))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| DiscordError::Unavailable("Discord's ban list had a ban without a user id".into()))?;
        Ok(BansPage { bans, remaining: pace.remaining, reset_after: pace.reset_after })
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
            // Discord documents no JSON code for an unknown rule: any 404
            // means it is gone (an admin may have deleted it by hand).
            Err(DiscordError::Refused { status: 404, .. }) => Ok(()),
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
        let cache = self.cache()?;
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
        let cache = self.cache()?;
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
            overwrites: guild
                .channels
                .values()
                .flat_map(|channel| {
                    channel.permission_overwrites.iter().filter(|o| !o.allow.is_empty()).filter_map(|o| {
                        let (id, member) = match o.kind {
                            serenity::all::PermissionOverwriteType::Role(r) => (r.get(), false),
                            serenity::all::PermissionOverwriteType::Member(u) => (u.get(), true),
                            _ => return None,
                        };
                        Some(Overwrite { channel_id: channel.id.get(), id, member, allow: o.allow.bits() })
                    })
                })
                .collect(),
        })
    }
}
