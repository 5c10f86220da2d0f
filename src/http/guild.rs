//! Routes that act on Discord for one guild: guild info, ban check, ban,
//! unban, role add and remove. Each parses its ids and body, then hands the
//! rules (scopes, dry runs, idempotency, audit) to the service.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ok, ApiError};
use super::extract::{snowflake, ApiPath, Body};
use super::routes::{Envelope, ErrorEnvelope};
use super::AppState;
use crate::discord::GuildInfo;
use crate::keys::Scope;
use crate::service::actions::{BanStatus, WriteOutcome};
use crate::service::roblox::links::MemberId;

/// Guild info from the bot's cache (no Discord call; an `--only http`
/// listener reads it from Discord's REST API and keeps it briefly). Needs
/// `guild.read`.
#[utoipa::path(get, path = "/v1/guilds/{guild_id}", tag = "guilds", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id (snowflake)")),
    responses(
        (status = 200, description = "The guild", body = inline(Envelope<GuildInfo>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_found: the bot is not in this guild", body = ErrorEnvelope),
        (status = 502, description = "discord_error: a listener without the gateway could not read the guild from Discord", body = ErrorEnvelope),
    ))]
pub async fn guild_info(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(guild_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let guild_id = snowflake("guild_id", &guild_id)?;
    Ok(ok(state.actions.guild_info(&caller, guild_id).await?))
}

fn ids(guild_id: &str, user_id: &str) -> Result<(u64, MemberId), ApiError> {
    Ok((snowflake("guild_id", guild_id)?, member("user_id", user_id)?))
}

/// A member route's `user_id`: a Discord id, or `roblox:<userId>` (resolved
/// through the guild's account linker by the service).
pub(super) fn member(what: &str, raw: &str) -> Result<MemberId, ApiError> {
    if raw.starts_with("roblox:") {
        MemberId::parse(raw).map_err(|why| ApiError::BadRequest(format!("{what} {why}")))
    } else {
        snowflake(what, raw).map(MemberId::Discord)
    }
}

const MEMBER: &str = "User id: a Discord id, or roblox:<userId> (resolved through the guild's account linker)";

/// Whether a user is banned. Needs `bans.read`. Answers are cached for a
/// few seconds; this process's own bans and Discord's ban events refresh them.
#[utoipa::path(get, path = "/v1/guilds/{guild_id}/bans/{user_id}", tag = "bans", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ("user_id" = String, Path, description = MEMBER)),
    responses(
        (status = 200, description = "Ban status (a roblox: id linked to several Discord accounts: banned if any is)", body = inline(Envelope<BanStatus>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_linked: the guild's linker knows no Discord account for that roblox: id", body = ErrorEnvelope),
        (status = 502, description = "discord_error; linker_error: the guild's account linker failed, or none is set", body = ErrorEnvelope),
        (status = 503, description = "discord_paused: Discord calls for this guild are paused; linker_limited: the guild's account linker asked to wait; discord_busy: all of the \
            guild's Discord calls stayed in flight for 1 s", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds until calls resume, or to wait before trying again"))),
    ))]
pub async fn ban_status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((guild_id, user_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (guild_id, member) = ids(&guild_id, &user_id)?;
    Ok(ok(state.actions.member_ban_status(&caller, guild_id, &member).await?))
}

/// The optional body of a ban.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// Shown in Discord's audit log after the key's name (at most 512 characters).
    #[schema(max_length = 512)] // MAX_REASON_CHARS
    reason: Option<String>,
    /// Delete the user's messages from this many seconds back (0–604800, 7 days).
    #[schema(minimum = 0, maximum = 604800)] // MAX_DELETE_MESSAGE_SECONDS
    #[serde(default, deserialize_with = "whole_number")]
    delete_message_seconds: Option<i64>,
}

/// A whole number, also when written with a zero fraction (`60.0`): JSON
/// Schema, and so the document, counts that as an integer, while serde would
/// refuse it for an `i64`. `1.5` and `"60"` are still refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    let whole = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < LIMIT).map(|f| f as i64);
    n.as_i64().or(whole).map(Some).ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number")))
}

/// Bans a user (a test key only pretends). Needs `bans.write`.
#[utoipa::path(put, path = "/v1/guilds/{guild_id}/bans/{user_id}", tag = "bans", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ("user_id" = String, Path, description = MEMBER)),
    request_body(content = Option<BanBody>, description = "Optional"),
    responses(
        (status = 200, description = "Banned (or already banned: changed=false)", body = inline(Envelope<BanResult>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 401, description = "key_suspended: also when this ban would exceed the key's ban budget", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch, insufficient_scope or member_protected (the owner, the bot, a moderator, a member the bot does not outrank)", body = ErrorEnvelope),
        (status = 404, description = "not_linked: the guild's linker knows no Discord account for that roblox: id", body = ErrorEnvelope),
        (status = 409, description = "ambiguous_link: that roblox: id is linked to several Discord accounts", body = ErrorEnvelope),
        (status = 502, description = "discord_error; linker_error: the guild's account linker failed, or none is set", body = ErrorEnvelope),
        (status = 503, description = "discord_paused: Discord calls for this guild are paused; linker_limited: the guild's account linker asked to wait; discord_busy: all of the \
            guild's Discord calls stayed in flight for 1 s", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds until calls resume, or to wait before trying again"))),
    ))]
pub async fn ban(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((guild_id, user_id)): ApiPath<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (guild_id, member) = ids(&guild_id, &user_id)?;
    // A key that may not ban here learns nothing about its body (403 before 400).
    caller.authorize(guild_id, Scope::BansWrite)?;
    let body: BanBody = body.optional_json()?.unwrap_or_default();
    let (user_id, roblox_id) = state.actions.write_target(&caller, guild_id, Scope::BansWrite, &member).await?;
    let outcome =
        state.actions.ban(&caller, guild_id, user_id, roblox_id, body.reason, body.delete_message_seconds).await?;
    Ok(ok(BanResult { banned: true, outcome }))
}

/// Unbans a user (a test key only pretends). Needs `bans.write`.
#[utoipa::path(delete, path = "/v1/guilds/{guild_id}/bans/{user_id}", tag = "bans", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ("user_id" = String, Path, description = MEMBER)),
    responses(
        (status = 200, description = "Unbanned (or was not banned: changed=false)", body = inline(Envelope<BanResult>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
        (status = 404, description = "not_linked: the guild's linker knows no Discord account for that roblox: id", body = ErrorEnvelope),
        (status = 409, description = "ambiguous_link: that roblox: id is linked to several Discord accounts", body = ErrorEnvelope),
        (status = 502, description = "discord_error; linker_error: the guild's account linker failed, or none is set", body = ErrorEnvelope),
        (status = 503, description = "discord_paused: Discord calls for this guild are paused; linker_limited: the guild's account linker asked to wait; discord_busy: all of the \
            guild's Discord calls stayed in flight for 1 s", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds until calls resume, or to wait before trying again"))),
    ))]
pub async fn unban(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((guild_id, user_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (guild_id, member) = ids(&guild_id, &user_id)?;
    let (user_id, roblox_id) = state.actions.write_target(&caller, guild_id, Scope::BansWrite, &member).await?;
    let outcome = state.actions.unban(&caller, guild_id, user_id, roblox_id).await?;
    Ok(ok(BanResult { banned: false, outcome }))
}

/// Gives a member a role (a test key only pretends). Needs `roles.write`.
#[utoipa::path(put, path = "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ("user_id" = String, Path, description = MEMBER),
        ("role_id" = String, Path, description = "Role id")),
    responses(
        (status = 200, description = "Added (or already had it: changed=false)", body = inline(Envelope<RoleResult>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 401, description = "key_suspended: also when this change would exceed the key's role budget", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch, insufficient_scope or role_not_allowed (a role with a moderator's permission, managed, @everyone, at or above the bot's, or outside the key's allowed_roles)", body = ErrorEnvelope),
        (status = 404, description = "not_found: the server has no such role (known from the bot's view of its roles; Discord is not asked); not_linked: the guild's linker knows no Discord account for that roblox: id", body = ErrorEnvelope),
        (status = 409, description = "ambiguous_link: that roblox: id is linked to several Discord accounts", body = ErrorEnvelope),
        (status = 502, description = "discord_error (Unknown Member, Missing Permissions…); linker_error: the guild's account linker failed, or none is set", body = ErrorEnvelope),
        (status = 503, description = "discord_paused: Discord calls for this guild are paused; linker_limited: the guild's account linker asked to wait; discord_busy: all of the \
            guild's Discord calls stayed in flight for 1 s", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds until calls resume, or to wait before trying again"))),
    ))]
pub async fn add_role(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((guild_id, user_id, role_id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    role(state, caller, (guild_id, user_id, role_id), true).await
}

/// Takes a role from a member (a test key only pretends). Needs `roles.write`.
#[utoipa::path(delete, path = "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ("user_id" = String, Path, description = MEMBER),
        ("role_id" = String, Path, description = "Role id")),
    responses(
        (status = 200, description = "Removed (or did not have it: changed=false)", body = inline(Envelope<RoleResult>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 401, description = "key_suspended: also when this change would exceed the key's role budget", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch, insufficient_scope or role_not_allowed (a role with a moderator's permission, managed, @everyone, at or above the bot's, or outside the key's allowed_roles)", body = ErrorEnvelope),
        (status = 404, description = "not_found: the server has no such role (known from the bot's view of its roles; Discord is not asked); not_linked: the guild's linker knows no Discord account for that roblox: id", body = ErrorEnvelope),
        (status = 409, description = "ambiguous_link: that roblox: id is linked to several Discord accounts", body = ErrorEnvelope),
        (status = 502, description = "discord_error; linker_error: the guild's account linker failed, or none is set", body = ErrorEnvelope),
        (status = 503, description = "discord_paused: Discord calls for this guild are paused; linker_limited: the guild's account linker asked to wait; discord_busy: all of the \
            guild's Discord calls stayed in flight for 1 s", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds until calls resume, or to wait before trying again"))),
    ))]
pub async fn remove_role(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((guild_id, user_id, role_id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    role(state, caller, (guild_id, user_id, role_id), false).await
}

async fn role(
    state: AppState,
    caller: crate::service::Authenticated,
    (guild_id, user_id, role_id): (String, String, String),
    add: bool,
) -> Result<Response, ApiError> {
    let (guild_id, member) = ids(&guild_id, &user_id)?;
    let role_id = snowflake("role_id", &role_id)?;
    let (user_id, roblox_id) = state.actions.write_target(&caller, guild_id, Scope::RolesWrite, &member).await?;
    let outcome = state.actions.set_role(&caller, guild_id, user_id, roblox_id, role_id, add).await?;
    Ok(ok(RoleResult { user_id: user_id.to_string(), role_id: role_id.to_string(), has_role: add, outcome }))
}

/// What a ban or unban answers: the user's state now, and what the write did.
#[derive(Serialize, ToSchema)]
pub struct BanResult {
    /// Whether the user is banned now (as far as this key can tell: a test key only pretends).
    banned: bool,
    #[serde(flatten)]
    outcome: WriteOutcome,
}

/// What a role change answers: the member's state now, and what the write did.
#[derive(Serialize, ToSchema)]
pub struct RoleResult {
    #[schema(example = "1100000000000000001")]
    user_id: String,
    #[schema(example = "1300000000000000001")]
    role_id: String,
    /// Whether the member has the role now (as far as this key can tell).
    has_role: bool,
    #[serde(flatten)]
    outcome: WriteOutcome,
}
