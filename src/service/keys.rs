//! A key's lifecycle: issue, list, find, revoke, suspend and resume,
//! delete, rotate. Every change is audited in its own transaction and
//! applied to the index before it returns (`KeyService::change_key`).

use super::{describe, Error, IssuedKey, KeyDraft, KeyService, OldSecret, Result, MAX_UNUSED_GRACE_SECONDS};
use crate::audit::{Action, Actor, NewAuditEvent};
use crate::keys::{token, KeyChange, KeyId, KeyRecord, KeyStatus, Ttl};
use crate::store::{NewKeyRow, Rotation};

impl KeyService {
    /// Creates a key within the guild's active-key limit, with no maker's
    /// bound (the operator CLI; the bot goes through `makers::Makers::issue`).
    pub async fn issue(&self, guild_id: u64, draft: KeyDraft, actor: &Actor) -> Result<IssuedKey> {
        self.issue_made_by(guild_id, draft, actor, None).await
    }

    /// [`Self::issue`], bounded by `maker_id` when given (whose powers the
    /// caller has checked).
    #[tracing::instrument(skip_all, fields(guild_id, key_id))]
    pub(super) async fn issue_made_by(
        &self,
        guild_id: u64,
        draft: KeyDraft,
        actor: &Actor,
        maker_id: Option<u64>,
    ) -> Result<IssuedKey> {
        let now = self.now();
        let secret = token::generate(&self.inner.cfg.prefix, draft.environment);
        let id = KeyId::generate();
        tracing::Span::current().record("guild_id", guild_id).record("key_id", id.as_str());
        let prefix = secret.display_prefix();
        let expires_at = draft.expires_in.map(|t| now + t.as_chrono());
        let rate_limit = draft.rate_limit.unwrap_or(self.inner.cfg.default_rate_limit_per_minute);
        let created_by = actor.created_by();
        let row = NewKeyRow {
            id: &id,
            guild_id,
            name: draft.name.as_str(),
            hash: secret.hash(),
            prefix: &prefix,
            environment: draft.environment,
            scopes: &draft.scopes,
            created_by: &created_by,
            expires_at,
            rate_limit_per_minute: rate_limit,
            allowed_ips: &draft.allowed_ips,
            allowed_roles: &draft.allowed_roles,
            ban_budget: draft.ban_budget,
            role_budget: draft.role_budget,
            maker_id,
        };
        let mut event = NewAuditEvent {
            guild_id,
            action: Action::KeyCreated,
            actor: actor.clone(),
            key: Some(crate::audit::KeyRef { id: id.clone(), name: draft.name.to_string(), prefix: prefix.clone() }),
            test: false,
            details: serde_json::json!({
                "scopes": draft.scopes.names(),
                "environment": draft.environment,
                "expires_at": expires_at,
                "rate_limit_per_minute": rate_limit,
                "allowed_ips": draft.allowed_ips.entries(),
                "allowed_roles": draft.allowed_roles.ids().iter().map(u64::to_string).collect::<Vec<_>>(),
                "ban_budget": draft.ban_budget.unwrap_or(self.inner.cfg.default_ban_budget),
                "role_budget": draft.role_budget.unwrap_or(self.inner.cfg.default_role_budget),
            }),
        };
        if let Some(maker) = maker_id {
            event.details["maker_id"] = serde_json::json!(maker.to_string());
        }
        let max = self.inner.cfg.max_per_guild;
        if !self.change_key(&id, self.inner.store.insert_key_within_limit(&row, max, now, &event)).await? {
            return Err(Error::LimitReached { max });
        }
        let record = self.inner.store.get_key(&id).await?.ok_or_else(|| anyhow::anyhow!("created key vanished"))?;
        tracing::info!(key_id = %id, guild_id, "key created");
        Ok(IssuedKey { record, secret })
    }

    /// A guild's keys, with last-used times not yet flushed folded in.
    pub async fn list(&self, guild_id: u64) -> Result<Vec<KeyRecord>> {
        let keys = self.inner.store.list_keys(guild_id).await?;
        Ok(keys.into_iter().map(|k| self.with_pending_usage(k)).collect())
    }

    /// Active keys of a guild and the most allowed.
    pub async fn active_count(&self, guild_id: u64) -> Result<(u32, u32)> {
        let n = self.inner.store.count_active(guild_id, self.now()).await?;
        Ok((n, self.inner.cfg.max_per_guild))
    }

    fn with_pending_usage(&self, mut k: KeyRecord) -> KeyRecord {
        if let Some((at, n)) = self.inner.usage.pending_last_use(&k.id) {
            k.last_used_at = Some(k.last_used_at.map_or(at, |old| old.max(at)));
            k.use_count += n as i64;
        }
        if let Some((at, ip)) = self.inner.sightings.pending(&k.id) {
            if k.previous_secret_seen.as_ref().is_none_or(|(seen, _)| *seen < at) {
                k.previous_secret_seen = Some((at, ip.to_string()));
            }
        }
        k
    }

    /// Finds one key by id, display prefix or exact name; within a guild,
    /// or across all guilds when `guild_id` is `None` (the operator CLI).
    ///
    /// Across all guilds only an id (unique everywhere) or a prefix whose
    /// keys are all in one guild is accepted; a name, or a prefix shared by
    /// several guilds, is refused with [`Error::GuildNeeded`], listing the
    /// guilds, rather than act on whichever guild's key happens to match.
    pub async fn find(&self, guild_id: Option<u64>, reference: &str) -> Result<KeyRecord> {
        let reference = reference.trim();
        let mut found = self.inner.store.find_keys(guild_id, reference).await?;
        if guild_id.is_none() && !found.iter().any(|k| k.id.as_str() == reference) {
            let by_prefix: Vec<_> = found.iter().filter(|k| k.prefix == reference).cloned().collect();
            let candidates = if by_prefix.is_empty() { &found } else { &by_prefix };
            let mut guilds: Vec<u64> = candidates.iter().map(|k| k.guild_id).collect();
            guilds.sort_unstable();
            guilds.dedup();
            if (by_prefix.is_empty() && !found.is_empty()) || guilds.len() > 1 {
                return Err(Error::GuildNeeded { reference: reference.to_owned(), guilds });
            }
            found = by_prefix;
        }
        let now = self.now();
        // Most specific first: id, then prefix, then one active key by name.
        for pick in [
            &(|k: &KeyRecord| k.id.as_str() == reference) as &dyn Fn(&KeyRecord) -> bool,
            &|k: &KeyRecord| k.prefix == reference,
            &|k: &KeyRecord| k.status(now).holds_a_place(),
        ] {
            if found.len() > 1 {
                let narrowed: Vec<_> = found.iter().filter(|k| pick(k)).cloned().collect();
                if !narrowed.is_empty() {
                    found = narrowed;
                }
            }
        }
        match found.len() {
            0 => Err(Error::NotFound(reference.to_owned())),
            1 => Ok(self.with_pending_usage(found.remove(0))),
            _ => Err(Error::Ambiguous {
                reference: reference.to_owned(),
                candidates: found.iter().map(|k| k.id.to_string()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Finds one key as [`Self::find`] does, and checks its status permits
    /// `change` now (the rule is the key record's, `KeyRecord::may`): what
    /// an adapter asks before it asks a person to confirm the change.
    pub async fn find_for(&self, guild_id: Option<u64>, reference: &str, change: KeyChange) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        key.may(change, self.now()).map_err(|c| Error::conflict(c, &key))?;
        Ok(key)
    }

    /// Revokes a key, at once and for good.
    pub async fn revoke(&self, guild_id: Option<u64>, reference: &str, actor: &Actor) -> Result<KeyRecord> {
        self.revoke_with(guild_id, reference, actor, serde_json::json!({})).await
    }

    /// [`Self::revoke`], with details for its audit entry (why, when guildkey
    /// itself revokes).
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn revoke_with(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = self.now();
        key.may(KeyChange::Revoke, now).map_err(|c| Error::conflict(c, &key))?;
        let event = self.key_event(&key, Action::KeyRevoked, actor, details);
        if !self.change_key(&key.id, self.inner.store.revoke_key(&key.id, now, &event)).await? {
            return Err(Error::Revoked(describe(&key)));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key revoked");
        Ok(self.inner.store.get_key(&key.id).await?.unwrap_or(key))
    }

    /// Suspends a key (`suspend`) or resumes a suspended one: reversible,
    /// unlike a revocation. A suspended key is refused (401 `key_suspended`)
    /// and still counts against the guild's active-key limit.
    #[tracing::instrument(skip_all, fields(key_id, suspend))]
    pub async fn set_suspended(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        suspend: bool,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = self.now();
        let change = if suspend { KeyChange::Suspend } else { KeyChange::Resume };
        key.may(change, now).map_err(|c| Error::conflict(c, &key))?;
        let action = if suspend { Action::KeySuspended } else { Action::KeyResumed };
        let event = self.key_event(&key, action, actor, details);
        if !self.change_key(&key.id, self.inner.store.set_suspended(&key.id, suspend, now, &event)).await? {
            // Raced with another change: say what the key is now.
            let now_key = self.find(guild_id, key.id.as_str()).await?;
            return Err(match now_key.status(now) {
                KeyStatus::Revoked => Error::Revoked(describe(&now_key)),
                KeyStatus::Expired => Error::Expired(describe(&now_key)),
                KeyStatus::Suspended => Error::Suspended(describe(&now_key)),
                KeyStatus::Active => Error::NotSuspended(describe(&now_key)),
            });
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, suspend, "key suspension changed");
        Ok(self.inner.store.get_key(&key.id).await?.map_or(key, |k| self.with_pending_usage(k)))
    }

    /// Makes `maker_id` the key's maker and lifts its suspension (checked
    /// by `makers::Makers::adopt`), audited as `key.resumed` with the
    /// adoption in its details.
    #[tracing::instrument(skip_all, fields(key_id = %key.id, maker_id))]
    pub(super) async fn adopt(&self, key: &KeyRecord, maker_id: u64) -> Result<KeyRecord> {
        let now = self.now();
        let actor = Actor::User(maker_id);
        // Plain text (the audit entry escapes it); the embed names both makers in fields.
        let why = if key.suspended_at.is_some() {
            "adopted the key: it works again, bounded by its new maker's powers"
        } else {
            "adopted the key: it is now bounded by its new maker's powers"
        };
        let details = serde_json::json!({
            "adopted": true,
            "why": why,
            "maker_id": maker_id.to_string(),
            "previous_maker_id": key.maker_id.map(|m| m.to_string()),
            "was_suspended": key.suspended_at.is_some(),
        });
        let event = self.key_event(key, Action::KeyResumed, &actor, details);
        if !self.change_key(&key.id, self.inner.store.adopt_key(&key.id, maker_id, now, &event)).await? {
            let now_key = self.find(Some(key.guild_id), key.id.as_str()).await?;
            now_key.may(KeyChange::Adopt, now).map_err(|c| Error::conflict(c, &now_key))?;
            return Err(Error::Revoked(describe(&now_key)));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, maker_id, "key adopted");
        Ok(self.inner.store.get_key(&key.id).await?.map_or_else(|| key.clone(), |k| self.with_pending_usage(k)))
    }

    /// The Discord user whose powers bound the key, if it has a maker.
    pub async fn maker_of(&self, id: &KeyId) -> Result<Option<u64>> {
        Ok(self.inner.store.get_key(id).await?.and_then(|k| k.maker_id))
    }

    /// Deletes a revoked or expired key for good.
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn delete(&self, guild_id: Option<u64>, reference: &str, actor: &Actor) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = self.now();
        key.may(KeyChange::Delete, now).map_err(|c| Error::conflict(c, &key))?;
        let event = self.key_event(&key, Action::KeyDeleted, actor, serde_json::json!({}));
        if !self.change_key(&key.id, self.inner.store.delete_key(&key.id, now, &event)).await? {
            return Err(Error::NotFound(reference.to_owned()));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key deleted");
        // Its counters and log mean nothing now; retention would drop them anyway.
        if let Err(e) = self.inner.store.forget_usage(&key.id).await {
            tracing::warn!(key_id = %key.id, error = format!("{e:#}"), "failed to forget a deleted key's usage");
        }
        Ok(key)
    }

    /// Gives a key a new secret; the old one stops now or after `grace`.
    pub async fn rotate(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        grace: Option<Ttl>,
        actor: &Actor,
    ) -> Result<IssuedKey> {
        self.rotate_with(guild_id, reference, grace.map_or(OldSecret::StopsNow, OldSecret::WorksFor), actor).await
    }

    /// Gives a key a new secret; the old one stops as `old` says: now,
    /// after a grace period, or once it has gone unpresented for a while
    /// (retired by `tasks::rotations`, at most 30 days on).
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn rotate_with(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        old: OldSecret,
        actor: &Actor,
    ) -> Result<IssuedKey> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = self.now();
        // A suspended key keeps its suspension across a new secret.
        key.may(KeyChange::Rotate, now).map_err(|c| Error::conflict(c, &key))?;
        let secret = token::generate(&self.inner.cfg.prefix, key.environment);
        let prefix = secret.display_prefix();
        let (grace, until_unused) = match old {
            OldSecret::StopsNow => (None, None),
            OldSecret::WorksFor(g) => (Some(g), None),
            OldSecret::UntilUnused(u) => (Some(Ttl::from_seconds(MAX_UNUSED_GRACE_SECONDS)), Some(u)),
        };
        let previous_until = grace.map(|g| now + g.as_chrono());
        let mut event = self.key_event(
            &key,
            Action::KeyRotated,
            actor,
            serde_json::json!({
                "previous_prefix": key.prefix,
                "new_prefix": prefix,
                "grace_seconds": if until_unused.is_some() { 0 } else { grace.map_or(0, Ttl::seconds) },
                "previous_secret_valid_until": previous_until,
            }),
        );
        if let Some(u) = until_unused {
            event.details["until_unused_seconds"] = serde_json::json!(u.seconds());
        }
        if let Some(k) = event.key.as_mut() {
            k.prefix = prefix.clone();
        }
        let rotation = Rotation {
            id: &key.id,
            hash: secret.hash(),
            prefix: &prefix,
            previous_until,
            previous_idle_ms: until_unused.map(|u| u.seconds() * 1000),
        };
        if !self.change_key(&key.id, self.inner.store.rotate_key(&rotation, now, &event)).await? {
            return Err(Error::Revoked(describe(&key)));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key rotated");
        let record = self.inner.store.get_key(&key.id).await?.ok_or_else(|| Error::NotFound(reference.to_owned()))?;
        Ok(IssuedKey { record: self.with_pending_usage(record), secret })
    }
}
