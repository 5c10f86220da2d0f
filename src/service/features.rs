//! Features the bot's own permissions switch off and on.
//!
//! Discord sends some gateway events only to a bot holding a permission in
//! the guild (discord-api-docs, `events/gateway-events.mdx`): AutoMod's
//! events need Manage Server, ban events Ban Members or View Audit Log. A
//! bot that loses the permission hears nothing, not an error: the leak guard
//! keeps blocking pasted keys but no longer revokes them, bans made in
//! Discord stop reaching the ban cache and the webhook. So the gateway's view
//! of the bot's permissions is watched here, and each change is said in the
//! guild's audit channel (actor guildkey, action `feature.changed`): once
//! when a feature goes off, once when it is back.
//!
//! The first sight of a guild (its GUILD_CREATE after a start) is recorded
//! without a post, so a restart does not repeat old news.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use super::KeyService;
use crate::audit::Action;
use crate::discord::permissions as p;

/// A feature that needs a permission for Discord to send its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The leak guard revoking a pasted key (AUTO_MODERATION_ACTION_EXECUTION).
    LeakGuardRevocation,
    /// Bans made in Discord reaching guildkey (GUILD_BAN_ADD/REMOVE).
    BanEvents,
}

impl Feature {
    pub const ALL: [Feature; 2] = [Feature::LeakGuardRevocation, Feature::BanEvents];

    /// The wire name in the audit event's `details.feature`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeakGuardRevocation => "leak_guard_revocation",
            Self::BanEvents => "ban_events",
        }
    }

    /// How the audit channel names it.
    pub fn title(self) -> &'static str {
        match self {
            Self::LeakGuardRevocation => "Leak-guard revocation",
            Self::BanEvents => "Ban events from Discord",
        }
    }

    /// The permissions (any one of them) Discord requires, and their names.
    pub fn needs(self) -> (u64, &'static str) {
        match self {
            Self::LeakGuardRevocation => (p::MANAGE_GUILD, "Manage Server"),
            Self::BanEvents => (p::BAN_MEMBERS | p::VIEW_AUDIT_LOG, "Ban Members or View Audit Log"),
        }
    }

    /// Whether a bot with these guild permissions gets the feature's events.
    pub fn available(self, permissions: u64) -> bool {
        permissions & p::ADMINISTRATOR != 0 || permissions & self.needs().0 != 0
    }
}

/// A feature going off or coming back in one guild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub feature: Feature,
    pub on: bool,
}

/// What the gateway last showed of each guild's features (in memory).
#[derive(Default)]
pub struct FeatureStates {
    seen: Mutex<HashMap<(u64, Feature), bool>>,
}

impl FeatureStates {
    /// Records the bot's permissions in a guild; returns the features that
    /// changed since the last sight (none on the first).
    pub fn observe(&self, guild_id: u64, permissions: u64) -> Vec<Change> {
        let mut seen = self.seen.lock().expect("feature states poisoned");
        let mut changes = Vec::new();
        for feature in Feature::ALL {
            let on = feature.available(permissions);
            if let Some(was) = seen.insert((guild_id, feature), on) {
                if was != on {
                    changes.push(Change { feature, on });
                }
            }
        }
        changes
    }

    /// Forgets a guild the bot left.
    pub fn forget(&self, guild_id: u64) {
        self.seen.lock().expect("feature states poisoned").retain(|(g, _), _| *g != guild_id);
    }
}

/// The notices themselves.
pub struct FeatureWatch {
    keys: KeyService,
    states: FeatureStates,
    /// Whether the leak guard revokes at all (the operator enabled the
    /// MESSAGE_CONTENT intent); without it there is nothing to switch off.
    revokes: bool,
}

impl FeatureWatch {
    pub fn new(keys: KeyService, revokes: bool) -> Self {
        Self { keys, states: FeatureStates::default(), revokes }
    }

    /// The gateway shows the bot's permissions in a guild (its GUILD_CREATE,
    /// its own member update, a role change): says in the audit channel what
    /// that switched off or on. Leak-guard revocation is spoken of only
    /// where it applies: the leak guard is on and guildkey revokes.
    pub async fn observe(&self, guild_id: u64, permissions: u64) {
        for change in self.states.observe(guild_id, permissions) {
            if change.feature == Feature::LeakGuardRevocation {
                let guarded = matches!(self.keys.leak_guard_rule(guild_id).await, Ok(Some(_)));
                if !(self.revokes && guarded) {
                    continue;
                }
            }
            let (_, needs) = change.feature.needs();
            let details = json!({
                "feature": change.feature.as_str(),
                "feature_title": change.feature.title(),
                "state": if change.on { "on" } else { "off" },
                "needs": needs,
            });
            match self.keys.record_system_event(guild_id, Action::FeatureChanged, details).await {
                Ok(_) => tracing::info!(
                    guild_id,
                    feature = change.feature.as_str(),
                    on = change.on,
                    "a bot permission switched a feature"
                ),
                Err(e) => tracing::warn!(guild_id, error = %e, "failed to record a feature change"),
            }
        }
    }

    /// The bot left the guild for good.
    pub fn forget(&self, guild_id: u64) {
        self.states.forget(guild_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_change_is_reported_once_and_never_on_first_sight() {
        let states = FeatureStates::default();
        let base = p::BAN_MEMBERS | p::MANAGE_GUILD;
        assert!(states.observe(1, base).is_empty(), "first sight");
        assert!(states.observe(1, base).is_empty(), "no change");
        assert_eq!(
            states.observe(1, p::BAN_MEMBERS),
            vec![Change { feature: Feature::LeakGuardRevocation, on: false }]
        );
        assert!(states.observe(1, p::BAN_MEMBERS).is_empty(), "said once");
        assert_eq!(states.observe(1, p::VIEW_AUDIT_LOG), vec![], "View Audit Log keeps ban events");
        assert_eq!(states.observe(1, 0), vec![Change { feature: Feature::BanEvents, on: false }]);
        let back = states.observe(1, p::ADMINISTRATOR);
        assert_eq!(back.len(), 2, "Administrator holds every permission: {back:?}");
        assert!(back.iter().all(|c| c.on));
        assert!(states.observe(2, 0).is_empty(), "another guild's first sight");
    }
}
