//! The account linkers: given a Roblox user id, the Discord accounts a
//! guild's members linked to it. Two providers, one call each:
//!
//! - Bloxlink v4's guild API: `GET {base}/v4/public/guilds/{guild}/roblox-to-discord/{robloxId}`
//!   with `Authorization: <key>`; answers `{"discordIDs": ["…", …]}`, errors
//!   `{"error": "…"}`, 429 when the key's quota is spent.
//! - RoVer: `GET {base}/api/guilds/{guild}/roblox-to-discord/{robloxId}`
//!   with `Authorization: Bearer <key>`; answers
//!   `{"discordUsers": [{"user": {"id": "…"}}, …], "robloxId": n, "guildId": "…"}`
//!   (only `discordUsers[].user.id` is read), errors `{"message": "…"}`.
//!
//! For both, 404 (or an empty list) means no link. A short timeout: a ban
//! check waits on this call. The key is sent only in the header, never
//! logged, and never part of an [`OutsideError`].

use std::time::Duration;

use serde::Deserialize;

use super::{client, retry_after, OutsideError};

/// How long one linker call may take in all.
pub const LINKER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait after a 429 that names no `Retry-After`.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;
/// At most this much of a linker's error text is kept.
const MESSAGE_CHARS: usize = 200;

/// Which account linker a guild uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Bloxlink,
    Rover,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Self::Bloxlink, Self::Rover];

    /// The name settings, the CLI and the audit log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bloxlink => "bloxlink",
            Self::Rover => "rover",
        }
    }

    /// How people write it.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Bloxlink => "Bloxlink",
            Self::Rover => "RoVer",
        }
    }

    /// `bloxlink` or `rover` (any case).
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(raw.trim()))
    }
}

/// Calls the account linkers. Cheap to clone.
#[derive(Clone)]
pub struct Linkers {
    http: reqwest::Client,
    bloxlink_base: String,
    rover_base: String,
}

#[derive(Deserialize)]
struct BloxlinkAnswer {
    #[serde(rename = "discordIDs", default)]
    discord_ids: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RoverAnswer {
    #[serde(rename = "discordUsers", default)]
    discord_users: Vec<RoverUser>,
}

#[derive(Deserialize)]
struct RoverUser {
    user: RoverUserId,
}

#[derive(Deserialize)]
struct RoverUserId {
    id: serde_json::Value,
}

/// A Discord id written as a string or a number.
fn discord_id(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .filter(|&id| id > 0)
}

impl Linkers {
    /// Linkers at these base URLs (`roblox.bloxlink_base_url`,
    /// `roblox.rover_base_url`, already checked by the config).
    pub fn new(bloxlink_base: &str, rover_base: &str) -> Self {
        Self {
            http: client(LINKER_TIMEOUT),
            bloxlink_base: bloxlink_base.trim_end_matches('/').to_owned(),
            rover_base: rover_base.trim_end_matches('/').to_owned(),
        }
    }

    /// The Discord accounts `provider` links to Roblox user `roblox_id` in
    /// `guild_id`, ascending; empty when it knows none.
    pub async fn roblox_to_discord(
        &self,
        provider: Provider,
        key: &str,
        guild_id: u64,
        roblox_id: u64,
    ) -> Result<Vec<u64>, OutsideError> {
        let service = provider.display_name();
        let request = match provider {
            Provider::Bloxlink => self
                .http
                .get(format!("{}/v4/public/guilds/{guild_id}/roblox-to-discord/{roblox_id}", self.bloxlink_base))
                .header(reqwest::header::AUTHORIZATION, key),
            Provider::Rover => self
                .http
                .get(format!("{}/api/guilds/{guild_id}/roblox-to-discord/{roblox_id}", self.rover_base))
                .bearer_auth(key),
        };
        let unavailable = |message: String| OutsideError::Unavailable { service, message };
        let response = request.send().await.map_err(|e| {
            unavailable(if e.is_timeout() {
                format!("no answer within {} s", LINKER_TIMEOUT.as_secs())
            } else {
                "could not be reached".to_owned()
            })
        })?;
        let status = response.status().as_u16();
        if status == 429 {
            let retry_after_secs = retry_after(response.headers()).unwrap_or(DEFAULT_RETRY_AFTER_SECS);
            return Err(OutsideError::Limited { service, retry_after_secs });
        }
        if status == 404 {
            return Ok(Vec::new());
        }
        let body = response.bytes().await.map_err(|_| unavailable("the answer was cut short".to_owned()))?;
        if !(200..300).contains(&status) {
            return Err(OutsideError::Refused { service, status, message: error_text(&body) });
        }
        let bad = || unavailable("answered something that is not its JSON".to_owned());
        let mut ids: Vec<u64> = match provider {
            Provider::Bloxlink => {
                let a: BloxlinkAnswer = serde_json::from_slice(&body).map_err(|_| bad())?;
                a.discord_ids.iter().filter_map(discord_id).collect()
            }
            Provider::Rover => {
                let a: RoverAnswer = serde_json::from_slice(&body).map_err(|_| bad())?;
                a.discord_users.iter().filter_map(|u| discord_id(&u.user.id)).collect()
            }
        };
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// A linker's own words for an error (`{"error": …}` or `{"message": …}`),
/// short and on one line.
fn error_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = ["error", "message"]
        .iter()
        .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "no explanation".to_owned());
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    one_line.chars().take(MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_by_name_in_any_case() {
        assert_eq!(Provider::parse("Bloxlink"), Some(Provider::Bloxlink));
        assert_eq!(Provider::parse(" rover "), Some(Provider::Rover));
        assert_eq!(Provider::parse("rowifi"), None);
    }

    #[test]
    fn ids_come_as_strings_or_numbers_and_errors_stay_short() {
        assert_eq!(discord_id(&serde_json::json!("123")), Some(123));
        assert_eq!(discord_id(&serde_json::json!(7)), Some(7));
        assert_eq!(discord_id(&serde_json::json!("x")), None);
        assert_eq!(discord_id(&serde_json::json!(0)), None);
        let long = serde_json::json!({ "error": "a\nb".repeat(300) }).to_string();
        let text = error_text(long.as_bytes());
        assert_eq!(text.chars().count(), MESSAGE_CHARS);
        assert!(!text.contains('\n'));
        assert_eq!(error_text(b"<html>"), "no explanation");
    }
}
