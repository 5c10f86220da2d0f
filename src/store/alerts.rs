//! The expiry reminders (`key_expiry_reminder`): finding keys that expire
//! soon, and claiming a reminder with its audit event in one transaction.
//! Each statement once, for both backends (see `db_run!`).

use chrono::{DateTime, Utc};

use super::audit::insert_audit_in;
use super::rows::{to_millis, ExpiringRow, EXPIRING_COLUMNS};
use super::Store;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;

/// A key that is not revoked and expires soon.
#[derive(Debug, Clone)]
pub struct ExpiringKey {
    pub key: crate::keys::KeyRef,
    pub guild_id: u64,
    pub expires_at: DateTime<Utc>,
    /// The most urgent threshold (seconds before expiry) the key was
    /// already reminded of, if any.
    pub reminded: Option<i64>,
}

/// An expiry reminder about to be claimed and recorded.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryReminder<'a> {
    pub key_id: &'a KeyId,
    /// The expiry the reminder is about: a key whose expiry changed
    /// meanwhile is not reminded of the old one.
    pub expires_at: DateTime<Utc>,
    /// The threshold announced, in seconds before expiry.
    pub threshold_seconds: i64,
    /// Less urgent thresholds this one makes moot (a key created to expire
    /// within a day never hears "within 7 days" after "within 1 day"):
    /// marked as done, without an event of their own.
    pub passed_over: &'a [i64],
}

impl Store {
    /// Keys not revoked (suspended ones included) that expire after `now`
    /// and no later than `until`, with the most urgent reminder each got,
    /// in order of expiry then id, after `after` (the last of the previous
    /// page), at most `limit`.
    pub async fn expiring_keys(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, &KeyId)>,
        limit: u32,
    ) -> anyhow::Result<Vec<ExpiringKey>> {
        let sql = format!(
            "select {EXPIRING_COLUMNS}, (select min(r.threshold_seconds) from key_expiry_reminder r \
                 where r.api_key_id = api_key.api_key_id) as reminded \
             from api_key where revoked_at is null and expires_at is not null \
             and expires_at > $1 and expires_at <= $2 \
             and (cast($3 as bigint) is null or expires_at > $3 \
                  or (expires_at = $3 and api_key_id > cast($4 as text))) \
             order by expires_at, api_key_id limit $5"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, ExpiringRow>(&sql)
                .bind(to_millis(now))
                .bind(to_millis(until))
                .bind(after.map(|(at, _)| to_millis(at)))
                .bind(after.map(|(_, id)| id.as_str().to_owned()))
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows.into_iter().map(ExpiringKey::from).collect())
    }

    /// Claims one expiry reminder and records its audit event, in one
    /// transaction: the claim is a row keyed by key and threshold, so
    /// however many instances try at once (or again after a restart), one
    /// records it. Returns false, writing nothing, when the reminder was
    /// already claimed or the key is revoked, gone, expired at `now` or
    /// expires at another time than `r.expires_at`.
    pub async fn claim_expiry_reminder(
        &self,
        r: &ExpiryReminder<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        // The claim first: SQLite's transaction takes the write lock at
        // once, and another process's claim of the same row is then a
        // conflict; on PostgreSQL a concurrent claim of the same row waits
        // on its primary key until this transaction ends, then finds it
        // taken.
        const CLAIM: &str = "insert into key_expiry_reminder \
                 (api_key_id, threshold_seconds, expires_at, sent_at, audit_event_id) \
             select api_key_id, $2, expires_at, $3, null from api_key \
             where api_key_id = $1 and revoked_at is null and expires_at = $4 and expires_at > $3 \
             on conflict do nothing";
        Ok(db_run!(transaction self, |tx| {
            let claim = |threshold: i64| {
                sqlx::query(CLAIM)
                    .bind(r.key_id.as_str())
                    .bind(threshold)
                    .bind(to_millis(now))
                    .bind(to_millis(r.expires_at))
            };
            if claim(r.threshold_seconds).execute(&mut *tx).await?.rows_affected() != 1 {
                return Ok(false);
            }
            for &threshold in r.passed_over {
                claim(threshold).execute(&mut *tx).await?;
            }
            let event_id = insert_audit_in(&mut *tx, event, now).await?;
            sqlx::query(
                "update key_expiry_reminder set audit_event_id = $1 \
                 where api_key_id = $2 and threshold_seconds = $3",
            )
            .bind(event_id)
            .bind(r.key_id.as_str())
            .bind(r.threshold_seconds)
            .execute(&mut *tx)
            .await?;
            true
        }))
    }
}
