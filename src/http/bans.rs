//! Routes over a guild's whole ban list (issue 24): the bulk check a game's
//! join burst sends, and the export a game's start-up sync pages through.
//! Both answer from the ban list in memory once the guild's is synced
//! (`service::ban_lists`); member ids are Discord ids or `roblox:<userId>`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ok, ApiError};
use super::extract::{short, snowflake, ApiPath, ApiQuery, Body};
use super::routes::{Envelope, ErrorEnvelope};
use super::AppState;
use crate::keys::Scope;
use crate::service::ban_lists::{BanExport, MAX_BULK_CHECK, MAX_EXPORT_PAGE};
use crate::service::Error;

/// The bulk check's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCheckBody {
    /// 1 to 100 Discord ids or `roblox:<userId>`s.
    #[schema(min_items = 1, max_items = 100, example = json!(["1100000000000000001", "roblox:123456789"]))]
    user_ids: Vec<String>,
}

/// Why one id of a bulk check could not be answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckError {
    /// `not_linked`, `linker_error`, `linker_limited` or `bad_request`.
    #[schema(example = "not_linked")]
    reason: String,
    message: String,
}

/// One id's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    /// The id as sent.
    #[schema(example = "roblox:123456789")]
    user_id: String,
    /// Whether the user is banned (for a Roblox id: any Discord account
    /// linked to it); false when `error` is set.
    banned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<CheckError>,
}

/// The bulk check's answer, in the order the ids were sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkCheckResults {
    results: Vec<CheckResult>,
}

fn check_error(error: Error) -> CheckError {
    let api = ApiError::from(error);
    CheckError { reason: api.reason().as_str().to_owned(), message: api.message() }
}

/// Whether each of up to 100 users is banned, in the order sent. Needs
/// `bans.read`. Answered from the ban list in memory once the guild's is
/// synced (no Discord call); an id that cannot be answered (a Roblox
/// account no Discord account is linked to) carries its own `error`.
#[utoipa::path(post, path = "/v1/guilds/{guild_id}/bans/check", tag = "bans", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id")),
    request_body(content = BulkCheckBody),
    responses(
        (status = 200, description = "One result per id, in request order", body = inline(Envelope<BulkCheckResults>)),
        (status = 400, description = "bad_request: not 1 to 100 ids, or not a JSON object", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
        (status = 502, description = "discord_error (a guild whose list is not synced yet is asked of Discord)", body = ErrorEnvelope),
        (status = 503, description = "discord_paused or discord_busy (a guild whose list is not synced yet)", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn check_bans(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(guild_id): ApiPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let guild_id = snowflake("guild_id", &guild_id)?;
    // A key that may not read bans here learns nothing about its body (403 before 400).
    caller.authorize(guild_id, Scope::BansRead)?;
    let body: BulkCheckBody =
        body.optional_json()?.ok_or_else(|| ApiError::BadRequest("the body must be {\"user_ids\": [...]}".into()))?;
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_BULK_CHECK {
        return Err(ApiError::BadRequest(format!(
            "user_ids holds {} ids; send 1 to {MAX_BULK_CHECK}",
            body.user_ids.len()
        )));
    }
    let members = body
        .user_ids
        .into_iter()
        .map(|raw| {
            let parsed = super::guild::member("user_id", &raw)
                .map_err(|e| Error::Invalid(crate::keys::InvalidInput::new("user_id", e.to_string())));
            (raw, parsed)
        })
        .collect();
    let answers = state.actions.check_bans(&caller, guild_id, members).await?;
    let results = answers
        .into_iter()
        .map(|a| CheckResult { user_id: a.user_id, banned: a.banned, error: a.error.map(check_error) })
        .collect();
    Ok(ok(BulkCheckResults { results }))
}

/// The export's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Users after this Discord id (the last page's `next_after`); from the first when absent.
    after: Option<String>,
    /// Bans per page, 1 to 1000 (default 1000).
    limit: Option<String>,
}

/// The guild's ban list, a page at a time, ascending by Discord id, with
/// each user's Roblox id where the guild's linker named one: what a game
/// syncs at start-up. Needs `bans.read`. From memory once the guild's list
/// is synced; before, each page is read from Discord.
#[utoipa::path(get, path = "/v1/guilds/{guild_id}/bans", tag = "bans", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id"), ExportQuery),
    responses(
        (status = 200, description = "A page of bans", body = inline(Envelope<BanExport>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
        (status = 502, description = "discord_error (a guild whose list is not synced yet is read from Discord)", body = ErrorEnvelope),
        (status = 503, description = "discord_paused or discord_busy (a guild whose list is not synced yet)", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn export_bans(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(guild_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let guild_id = snowflake("guild_id", &guild_id)?;
    caller.authorize(guild_id, Scope::BansRead)?;
    let after = match q.after.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(raw) => snowflake("after", raw)?,
    };
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => MAX_EXPORT_PAGE,
        Some(raw) => raw.parse::<u32>().ok().filter(|n| (1..=MAX_EXPORT_PAGE).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_EXPORT_PAGE}, not '{}'",
                short(raw)
            ))
        })?,
    };
    Ok(ok(state.actions.export_bans(&caller, guild_id, after, limit).await?))
}

#[cfg(test)]
mod tests {
    use super::super::guild::member;
    use crate::service::roblox::links::MemberId;

    #[test]
    fn member_ids_are_snowflakes_or_roblox_ids() {
        assert_eq!(member("user_id", "1100000000000000001").unwrap(), MemberId::Discord(1_100_000_000_000_000_001));
        assert_eq!(member("user_id", "roblox:123").unwrap(), MemberId::Roblox(123));
        assert_eq!(member("user_id", "roblox:9007199254740992").unwrap(), MemberId::Roblox(1 << 53));
        for bad in ["roblox:", "roblox:0", "roblox:9007199254740993", "roblox:-1", "roblox:1.5", "0", "abc", ""] {
            assert!(member("user_id", bad).is_err(), "{bad}");
        }
    }
}
