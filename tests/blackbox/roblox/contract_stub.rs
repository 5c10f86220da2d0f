//! The contract stub: the listener's answers to the routes issue 24 adds
//! (the bulk ban check, the ban-list export, `roblox:` ids in the ban
//! check), written from the lead's shared contract while other branches
//! build them. It stands in for the real listener only in the tests of the
//! client's batcher and start-up sync; once those routes are merged, these
//! tests move to `spawn_app` and this file goes.
//!
//! What it answers, as the contract says:
//! - `GET /v1/guilds/{g}/bans/{member}`: `{banned, reason}`; a `roblox:` id
//!   with no linked Discord account is 404 `not_linked`.
//! - `POST /v1/guilds/{g}/bans/check` `{"user_ids": [...]}` (1..=100, else
//!   400 `bad_request`): `{"results": [{"user_id", "banned", "error"?}]}` in
//!   request order; an id it cannot answer has `banned: false` and
//!   `error: {reason, message}`.
//! - `GET /v1/guilds/{g}/bans?after=&limit=` (1..=1000, default 1000):
//!   `{"bans": [{"user_id", "roblox_id"?}], "next_after"}` ascending by
//!   Discord id, `next_after` null on the last page.
//!
//! - `GET /v1/verify`: the key's `guild_id` (and a name).
//!
//! Every answer to a request with the right key carries `X-RateLimit-*`; a
//! wrong key is 401 `invalid_key` without them, as on the listener.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The largest Roblox id (the contract: 1..=2^53).
const MAX_ROBLOX_ID: u64 = 1 << 53;
/// The rate limit the stub's headers report.
pub const LIMIT: u64 = 120;

#[derive(Default)]
struct Data {
    key: String,
    guild: u64,
    /// Banned Discord ids, each with the Roblox id the listener knows.
    bans: BTreeMap<u64, Option<u64>>,
    /// Roblox id -> the Discord accounts the linker names.
    links: BTreeMap<u64, Vec<u64>>,
    /// Roblox ids whose lookup fails with this reason (a linker down...).
    failing: BTreeMap<u64, &'static str>,
    /// Requests answered with the right key (for X-RateLimit-Remaining).
    answered: u64,
}

type Shared = Arc<Mutex<Data>>;

pub struct ContractStub {
    pub base: String,
    pub http: reqwest::Client,
    data: Shared,
}

impl ContractStub {
    /// Serves the contract for `guild` on a loopback port, accepting `key`.
    pub async fn start(guild: u64, key: &str) -> Self {
        let data: Shared = Arc::new(Mutex::new(Data { key: key.to_owned(), guild, ..Data::default() }));
        let router = Router::new()
            .route("/v1/guilds/{guild}/bans/check", post(check))
            .route("/v1/guilds/{guild}/bans/{member}", get(one))
            .route("/v1/guilds/{guild}/bans", get(export))
            .route("/v1/verify", get(verify))
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the contract stub");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.expect("the contract stub") });
        Self { base, http: reqwest::Client::new(), data }
    }

    /// Bans a Discord account; with a Roblox id, links it too (the
    /// listener then knows it and exports it).
    pub fn ban(&self, discord: u64, roblox: Option<u64>) {
        let mut data = self.data.lock().unwrap();
        data.bans.insert(discord, roblox);
        if let Some(r) = roblox {
            data.links.entry(r).or_default().push(discord);
        }
    }

    /// Links a Roblox id to a Discord account without a ban.
    pub fn link(&self, roblox: u64, discord: u64) {
        self.data.lock().unwrap().links.entry(roblox).or_default().push(discord);
    }

    /// Makes every lookup of this Roblox id fail with `reason`.
    pub fn fail(&self, roblox: u64, reason: &'static str) {
        self.data.lock().unwrap().failing.insert(roblox, reason);
    }
}

/// A member checked: banned or not, or why it could not be answered.
fn banned(data: &Data, member: &str) -> Result<bool, (&'static str, String)> {
    if let Some(digits) = member.strip_prefix("roblox:") {
        let id = digits
            .parse::<u64>()
            .ok()
            .filter(|id| (1..=MAX_ROBLOX_ID).contains(id) && !digits.starts_with('0'))
            .ok_or(("bad_request", format!("{member} is not a Roblox id")))?;
        if let Some(reason) = data.failing.get(&id) {
            return Err((reason, format!("the linker failed for {member}")));
        }
        let linked = data.links.get(&id).filter(|d| !d.is_empty());
        let linked = linked.ok_or(("not_linked", format!("no Discord account is linked to {member}")))?;
        return Ok(linked.iter().any(|d| data.bans.contains_key(d)));
    }
    let id =
        member.parse::<u64>().ok().filter(|&id| id > 0).ok_or(("bad_request", format!("{member} is not an id")))?;
    Ok(data.bans.contains_key(&id))
}

fn status_of(reason: &str) -> StatusCode {
    match reason {
        "not_linked" => StatusCode::NOT_FOUND,
        "linker_error" => StatusCode::BAD_GATEWAY,
        "linker_limited" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The key and guild checked, then `answer(data)` with the rate-limit headers.
fn admitted(
    data: &Shared,
    headers: &HeaderMap,
    guild: u64,
    answer: impl FnOnce(&Data) -> (StatusCode, Value),
) -> Response {
    let mut data = data.lock().unwrap();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {}", data.key)) {
        let (status, body) = envelope(StatusCode::UNAUTHORIZED, "invalid_key", "not a key");
        return (status, Json(body)).into_response();
    }
    data.answered += 1;
    let (status, body) = if guild == data.guild {
        answer(&data)
    } else {
        envelope(StatusCode::FORBIDDEN, "guild_mismatch", "another guild")
    };
    let remaining = LIMIT.saturating_sub(data.answered);
    let limits = [("x-ratelimit-limit", LIMIT), ("x-ratelimit-remaining", remaining), ("x-ratelimit-reset", 60)];
    let headers: Vec<(&str, String)> = limits.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut response = (status, Json(body)).into_response();
    for (k, v) in headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

fn envelope(status: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({ "success": false, "data": {}, "error": { "reason": reason, "message": message } }))
}

fn ok(data: Value) -> (StatusCode, Value) {
    (StatusCode::OK, json!({ "success": true, "data": data }))
}

/// Only what the client reads: the key's guild.
async fn verify(State(data): State<Shared>, headers: HeaderMap) -> Response {
    let guild = data.lock().unwrap().guild;
    admitted(&data, &headers, guild, |data| ok(json!({ "guild_id": data.guild.to_string(), "name": "stub" })))
}

async fn one(State(data): State<Shared>, headers: HeaderMap, Path((guild, member)): Path<(u64, String)>) -> Response {
    admitted(&data, &headers, guild, |data| match banned(data, &member) {
        Ok(true) => ok(json!({ "banned": true, "reason": "stub ban" })),
        Ok(false) => ok(json!({ "banned": false, "reason": null })),
        Err((reason, message)) => envelope(status_of(reason), reason, &message),
    })
}

#[derive(Deserialize)]
struct CheckBody {
    user_ids: Vec<String>,
}

async fn check(
    State(data): State<Shared>,
    headers: HeaderMap,
    Path(guild): Path<u64>,
    Json(body): Json<CheckBody>,
) -> Response {
    admitted(&data, &headers, guild, |data| {
        if body.user_ids.is_empty() || body.user_ids.len() > 100 {
            return envelope(StatusCode::BAD_REQUEST, "bad_request", "1 to 100 user_ids");
        }
        let results: Vec<Value> = body
            .user_ids
            .iter()
            .map(|id| match banned(data, id) {
                Ok(b) => json!({ "user_id": id, "banned": b }),
                Err((reason, message)) => {
                    json!({ "user_id": id, "banned": false, "error": { "reason": reason, "message": message } })
                }
            })
            .collect();
        ok(json!({ "results": results }))
    })
}

#[derive(Deserialize)]
struct Page {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn export(
    State(data): State<Shared>,
    headers: HeaderMap,
    Path(guild): Path<u64>,
    Query(page): Query<Page>,
) -> Response {
    admitted(&data, &headers, guild, |data| {
        let limit = page.limit.unwrap_or(1000);
        if !(1..=1000).contains(&limit) {
            return envelope(StatusCode::BAD_REQUEST, "bad_request", "limit is 1 to 1000");
        }
        let after = page.after.unwrap_or(0);
        let mut rest = data.bans.range(after + 1..);
        let bans: Vec<Value> = rest
            .by_ref()
            .take(limit)
            .map(|(id, roblox)| match roblox {
                Some(r) => json!({ "user_id": id.to_string(), "roblox_id": r }),
                None => json!({ "user_id": id.to_string() }),
            })
            .collect();
        let next_after = match rest.next() {
            Some(_) => bans.last().map(|b| b["user_id"].clone()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        ok(json!({ "bans": bans, "next_after": next_after }))
    })
}
