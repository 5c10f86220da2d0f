//! A double of the account linkers: one axum server on loopback speaking
//! both Bloxlink v4's guild API
//! (`GET /v4/public/guilds/{guild}/roblox-to-discord/{robloxId}`,
//! `Authorization: <key>`, `{"discordIDs": [...]}`, errors `{"error": ...}`)
//! and RoVer's (`GET /api/guilds/{guild}/roblox-to-discord/{robloxId}`,
//! `Authorization: Bearer <key>`, `{"discordUsers": [{"user": {"id": ...}}],
//! "robloxId": n, "guildId": "..."}`, errors `{"message": ...}`).
//!
//! Each checks its own key (401 otherwise), answers 404 for an id it has no
//! link for, counts every call it gets, and can be told to answer 429 with
//! `Retry-After` (its quota spent), 500, or slowly. Shared by the
//! black-box and the service suites (each uses part of it).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The key each provider accepts.
pub const BLOXLINK_KEY: &str = "bloxlink-double-key-never-logged-7f3a";
pub const ROVER_KEY: &str = "rover-double-key-never-logged-91c2";

/// How the double answers every call, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Links as set, 404 for the rest.
    Normal,
    /// 429 with this `Retry-After` (seconds).
    Quota(u64),
    /// 500.
    Broken,
    /// Answers as `Normal`, after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    /// (guild, Roblox id) → Discord ids.
    links: HashMap<(u64, u64), Vec<u64>>,
    mode: Option<Mode>,
    bloxlink_calls: usize,
    rover_calls: usize,
    /// Authorization headers that were refused.
    refused: usize,
}

#[derive(Clone)]
pub struct LinkerDouble {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl LinkerDouble {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v4/public/guilds/{guild}/roblox-to-discord/{roblox}", get(bloxlink))
            .route("/api/guilds/{guild}/roblox-to-discord/{roblox}", get(rover))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the linker double");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, inner }
    }

    /// The `[roblox]` settings pointing both providers here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GUILDKEY_ROBLOX_BLOXLINK_BASE_URL".to_owned(), self.base.clone()),
            ("GUILDKEY_ROBLOX_ROVER_BASE_URL".to_owned(), self.base.clone()),
        ]
    }

    /// Links Roblox user `roblox_id` to these Discord accounts in `guild`.
    pub fn link(&self, guild: u64, roblox_id: u64, discord_ids: &[u64]) {
        self.inner.lock().unwrap().links.insert((guild, roblox_id), discord_ids.to_vec());
    }

    /// Forgets a link (as a guild-scoped linker does once the member left).
    pub fn unlink(&self, guild: u64, roblox_id: u64) {
        self.inner.lock().unwrap().links.remove(&(guild, roblox_id));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    /// Calls to both providers so far (refused ones included).
    pub fn calls(&self) -> usize {
        let i = self.inner.lock().unwrap();
        i.bloxlink_calls + i.rover_calls
    }

    pub fn bloxlink_calls(&self) -> usize {
        self.inner.lock().unwrap().bloxlink_calls
    }

    pub fn rover_calls(&self) -> usize {
        self.inner.lock().unwrap().rover_calls
    }

    /// Calls refused for a wrong or missing key.
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }
}

type Shared = Arc<Mutex<Inner>>;

/// What the double answers before a provider's shape: the mode's failure,
/// or the links for the id (after the mode's delay).
async fn answer(inner: &Shared, key_ok: bool, guild: u64, roblox: u64) -> Result<Option<Vec<u64>>, Response> {
    let mode = {
        let mut i = inner.lock().unwrap();
        if !key_ok {
            i.refused += 1;
        }
        i.mode.unwrap_or(Mode::Normal)
    };
    match mode {
        Mode::Quota(secs) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(json!({ "error": "You are being rate limited." })))
                .into_response();
            r.headers_mut().insert("retry-after", secs.into());
            return Err(r);
        }
        Mode::Broken => {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": "internal error" }))).into_response())
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Normal => {}
    }
    if !key_ok {
        return Err((StatusCode::UNAUTHORIZED, Json(json!({ "error": "Invalid API key" }))).into_response());
    }
    Ok(inner.lock().unwrap().links.get(&(guild, roblox)).cloned())
}

fn auth(headers: &HeaderMap) -> &str {
    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

async fn bloxlink(
    State(inner): State<Shared>,
    Path((guild, roblox)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> Response {
    inner.lock().unwrap().bloxlink_calls += 1;
    match answer(&inner, auth(&headers) == BLOXLINK_KEY, guild, roblox).await {
        Err(r) => r,
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({ "error": "User not found" }))).into_response(),
        Ok(Some(ids)) => {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            Json(json!({ "discordIDs": ids })).into_response()
        }
    }
}

async fn rover(State(inner): State<Shared>, Path((guild, roblox)): Path<(u64, u64)>, headers: HeaderMap) -> Response {
    inner.lock().unwrap().rover_calls += 1;
    let key_ok = auth(&headers) == format!("Bearer {ROVER_KEY}");
    match answer(&inner, key_ok, guild, roblox).await {
        Err(r) => {
            // RoVer words its errors as `message`.
            r
        }
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({ "errorCode": "user_not_found", "message": "User not found" })))
            .into_response(),
        Ok(Some(ids)) => Json(json!({
            "discordUsers": ids.iter().map(|id| json!({ "user": { "id": id.to_string(), "username": "member" } })).collect::<Vec<_>>(),
            "robloxId": roblox,
            "guildId": guild.to_string(),
        }))
        .into_response(),
    }
}
