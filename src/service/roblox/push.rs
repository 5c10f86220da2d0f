//! Bans pushed into live Roblox games.
//!
//! A guild sets a universe, its Open Cloud key (sealed, `credentials`) and a
//! mode: `publish` (a MessagingService message on a topic, which the game's
//! subscriber acts on), `restrict` (Roblox's own ban: a user restriction,
//! which kicks a joined player with no game code), `both`, or `none` (the
//! key kept for Secrets delivery alone).
//!
//! Every ban and unban the gateway reports (made through the API or in
//! Discord: GUILD_BAN_ADD/REMOVE fire for both) of a member whose Roblox id
//! is known is queued first, one outbox row per kind of push
//! (`roblox_push_event`), then claimed and sent by the worker
//! (`tasks::roblox_push`): a crash or a second instance still sends it once.
//! The origin is `api` with the key's prefix when a recent audit event of an
//! API ban (or unban) of that member is found, else `discord`.

use std::sync::OnceLock;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::keys::InvalidInput;
use crate::service::credentials::CredentialKind;
use crate::service::error::{Error, Result};
use crate::service::KeyService;
use crate::store::{NewPush, PushEvent, PushSetting};

/// The MessagingService topic when none is given.
pub const DEFAULT_TOPIC: &str = "guildkey-bans";
/// Roblox's limits on a published message (creator-docs usage-messaging).
pub const MAX_TOPIC_CHARS: usize = 80;
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bans this close together are packed into one message: the first waits
/// this long for others.
pub const PACK_WINDOW_MS: i64 = 1000;
/// How far back an API ban's audit event is looked for to name the origin.
const ORIGIN_LOOKBACK_SECS: i64 = 120;

/// How bans reach a universe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMode {
    Publish,
    Restrict,
    Both,
    /// No pushes: the Open Cloud key is kept for Secrets delivery alone.
    None,
}

impl PushMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "publish" => Self::Publish,
            "restrict" => Self::Restrict,
            "both" => Self::Both,
            "none" => Self::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Restrict => "restrict",
            Self::Both => "both",
            Self::None => "none",
        }
    }

    /// The outbox kinds a ban makes in this mode.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Publish => &["publish"],
            Self::Restrict => &["restrict"],
            Self::Both => &["publish", "restrict"],
            Self::None => &[],
        }
    }
}

/// Wakes the push worker when a push is queued in this process.
pub fn queued() -> &'static Notify {
    static QUEUED: OnceLock<Notify> = OnceLock::new();
    QUEUED.get_or_init(Notify::new)
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid(InvalidInput { field, message: message.into() })
}

/// A guild's push setting and its latest pushes (`roblox push show`).
#[derive(Debug, Clone)]
pub struct PushStatus {
    pub setting: PushSetting,
    pub recent: Vec<PushEvent>,
}

impl KeyService {
    /// Sets a guild's push: the universe, its Open Cloud key (sealed under
    /// `secrets.key`, labelled with the universe id), the mode and topic.
    pub async fn set_roblox_push(
        &self,
        guild_id: u64,
        universe_id: u64,
        key: &str,
        mode: PushMode,
        topic: Option<&str>,
    ) -> Result<PushSetting> {
        if universe_id == 0 || universe_id > i64::MAX as u64 {
            return Err(invalid("universe", "a Roblox universe id is a positive whole number"));
        }
        let key = key.trim();
        if key.is_empty() || key.len() > 4096 || key.chars().any(char::is_control) {
            return Err(invalid("key", "give the universe's Open Cloud API key (one line)"));
        }
        let topic = topic.map(str::trim).filter(|t| !t.is_empty()).unwrap_or(DEFAULT_TOPIC);
        if topic.chars().count() > MAX_TOPIC_CHARS {
            return Err(invalid("topic", format!("a MessagingService topic is at most {MAX_TOPIC_CHARS} characters")));
        }
        self.credentials().put(guild_id, CredentialKind::OpenCloud, &universe_id.to_string(), key).await?;
        let now = self.now();
        self.store().put_roblox_push(guild_id, universe_id, mode.as_str(), topic, now).await?;
        Ok(PushSetting {
            guild_id,
            universe_id,
            mode: mode.as_str().to_owned(),
            topic: topic.to_owned(),
            updated_at: now,
        })
    }

    /// A guild's push setting and its latest pushes, if it has one.
    pub async fn roblox_push_status(&self, guild_id: u64) -> Result<Option<PushStatus>> {
        let Some(setting) = self.store().roblox_push(guild_id).await? else { return Ok(None) };
        let recent = self.store().recent_roblox_pushes(guild_id, 10).await?;
        Ok(Some(PushStatus { setting, recent }))
    }

    /// Stops pushing for a guild and forgets its Open Cloud key; whether
    /// it had a push set.
    pub async fn remove_roblox_push(&self, guild_id: u64) -> Result<bool> {
        let had = self.store().delete_roblox_push(guild_id).await?;
        self.credentials().delete(guild_id, CredentialKind::OpenCloud).await?;
        Ok(had)
    }

    /// Queues the pushes a ban (`banned`) or unban of a Discord member
    /// makes: one per kind the guild's mode asks for and per Roblox account
    /// linked to the member. Returns how many were queued.
    pub async fn queue_ban_push(&self, guild_id: u64, discord_id: u64, banned: bool) -> Result<usize> {
        let Some(setting) = self.store().roblox_push(guild_id).await? else { return Ok(0) };
        let mode = PushMode::parse(&setting.mode).unwrap_or(PushMode::None);
        if mode.kinds().is_empty() {
            return Ok(0);
        }
        let links = self.store().roblox_ids_of(guild_id, &[discord_id]).await?;
        if links.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let (origin, key_prefix) = self.ban_origin(guild_id, discord_id, banned, now).await?;
        let action = if banned { "ban" } else { "unban" };
        let mut pushes = Vec::new();
        for link in &links {
            for kind in mode.kinds() {
                let due_at = if *kind == "publish" { now + ChronoDuration::milliseconds(PACK_WINDOW_MS) } else { now };
                pushes.push(NewPush {
                    guild_id,
                    universe_id: setting.universe_id,
                    kind,
                    roblox_id: link.roblox_id,
                    discord_id,
                    action,
                    origin,
                    key_prefix: key_prefix.as_deref(),
                    created_at: now,
                    due_at,
                });
            }
        }
        self.store().queue_roblox_pushes(&pushes).await?;
        queued().notify_one();
        Ok(pushes.len())
    }

    /// `api` and the key's prefix when an API ban (or unban) of this member
    /// was recorded lately, else `discord`.
    async fn ban_origin(
        &self,
        guild_id: u64,
        discord_id: u64,
        banned: bool,
        now: DateTime<Utc>,
    ) -> Result<(&'static str, Option<String>)> {
        let since = now - ChronoDuration::seconds(ORIGIN_LOOKBACK_SECS);
        let wanted = if banned { "ban.added" } else { "ban.removed" };
        let user = discord_id.to_string();
        let events = self.store().recent_ban_events(guild_id, since).await?;
        let api = events.into_iter().find(|e| {
            e.action.as_str() == wanted && e.actor_kind == "api_key" && e.details["user_id"].as_str() == Some(&user)
        });
        Ok(match api {
            Some(e) => ("api", e.key_prefix),
            None => ("discord", None),
        })
    }
}

/// Queues the pushes of a ban the gateway reported, off the event loop
/// (it reads and writes the database).
pub fn on_gateway_ban(keys: &KeyService, guild_id: u64, discord_id: u64, banned: bool) {
    let keys = keys.clone();
    tokio::spawn(async move {
        if let Err(e) = keys.queue_ban_push(guild_id, discord_id, banned).await {
            tracing::warn!(guild_id, error = %e, "failed to queue a Roblox push of a ban");
        }
    });
}

/// The envelope of one published message (the contract's wire format).
pub fn envelope(guild_id: u64, events: &[PushEvent]) -> Value {
    let events: Vec<Value> = events.iter().map(envelope_event).collect();
    json!({"v": 1, "guild_id": guild_id.to_string(), "events": events})
}

fn envelope_event(e: &PushEvent) -> Value {
    let mut v = json!({
        "roblox_id": e.roblox_id,
        "action": e.action,
        "origin": e.origin,
        "at": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if e.origin == "api" {
        if let Some(p) = &e.key_prefix {
            v["key_prefix"] = json!(p);
        }
    }
    v
}

/// How many of `events` (in order) fit one message of at most
/// [`MAX_MESSAGE_BYTES`], and that message; at least one.
pub fn pack(guild_id: u64, events: &[PushEvent]) -> (usize, String) {
    let mut n = events.len();
    loop {
        let text = envelope(guild_id, &events[..n]).to_string();
        if text.len() <= MAX_MESSAGE_BYTES || n <= 1 {
            return (n, text);
        }
        n -= 1;
    }
}

/// When the next restriction update of a user may be sent, given when the
/// last ones were sent (Roblox allows 2 a minute per user): `None` now.
pub fn restriction_slot(sent: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let minute = ChronoDuration::seconds(60);
    let recent: Vec<&DateTime<Utc>> = sent.iter().filter(|t| now - **t < minute).collect();
    if recent.len() < 2 {
        return None;
    }
    // The oldest of the last two leaves the window first.
    let oldest = recent[recent.len() - 2];
    Some(*oldest + minute + ChronoDuration::milliseconds(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(roblox_id: u64, origin: &str) -> PushEvent {
        PushEvent {
            id: 1,
            guild_id: 5,
            universe_id: 9,
            kind: "publish".into(),
            roblox_id,
            discord_id: 7,
            action: "ban".into(),
            origin: origin.into(),
            key_prefix: Some("gk_live_ab12".into()),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            state: "pending".into(),
            next_attempt_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            attempts: 0,
            last_error: None,
        }
    }

    #[test]
    fn the_envelope_follows_the_contract() {
        let v = envelope(5, &[event(123, "api"), event(456, "discord")]);
        assert_eq!(v["v"], 1);
        assert_eq!(v["guild_id"], "5");
        assert_eq!(v["events"][0]["roblox_id"], 123);
        assert_eq!(v["events"][0]["key_prefix"], "gk_live_ab12");
        assert_eq!(v["events"][1]["origin"], "discord");
        assert!(v["events"][1].get("key_prefix").is_none(), "only api bans name a key");
        assert_eq!(v["events"][0]["at"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn packing_stops_at_one_kib() {
        let many: Vec<PushEvent> = (0..40).map(|i| event(1_000_000_000 + i, "api")).collect();
        let (n, text) = pack(5, &many);
        assert!(n > 1 && n < 40, "{n}");
        assert!(text.len() <= MAX_MESSAGE_BYTES);
        let (n2, _) = pack(5, &many[n..]);
        assert!(n2 >= 1);
        assert_eq!(pack(5, &many[..3]).0, 3);
    }

    #[test]
    fn two_restriction_updates_a_minute_per_user() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = ChronoDuration::seconds;
        assert_eq!(restriction_slot(&[], t0), None);
        assert_eq!(restriction_slot(&[t0], t0 + s(1)), None);
        let slot = restriction_slot(&[t0, t0 + s(5)], t0 + s(6)).unwrap();
        assert!(slot >= t0 + s(60) && slot < t0 + s(61), "{slot}");
        assert_eq!(restriction_slot(&[t0, t0 + s(5)], t0 + s(61)), None, "the first left the window");
    }
}
