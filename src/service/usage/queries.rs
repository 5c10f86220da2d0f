//! Usage from the service's side: the request path's one call
//! ([`KeyService::record_request`]), the batched flush and the hourly
//! retention, and the reads (`/v1/usage`, `/apikey usage`, `/apikey info`,
//! the request log).

use chrono::{DateTime, Utc};

use super::super::usage_report::{self, Period, RequestPage, Totals, UsageReport, UsageSummary};
use super::super::{index::LiveKey, KeyService, Result};
use super::RequestFacts;
use crate::keys::KeyId;

impl KeyService {
    /// Writes pending last-used times, the request log and the counters of
    /// minutes that have ended (called on a timer), then alerts refusal
    /// spikes; see [`Self::flush_usage_at`].
    pub async fn flush_usage(&self) -> Result<usize> {
        self.flush_usage_at(self.now(), false).await
    }

    /// What [`Self::flush_usage`] does, at `now` (tests inject it); with
    /// `all`, the counters of the current minute too (at shutdown). Returns
    /// how many keys' last-used times were written.
    pub async fn flush_usage_at(&self, now: DateTime<Utc>, all: bool) -> Result<usize> {
        let now_ms = now.timestamp_millis();
        let mut refused = Vec::new();
        let flushed = self.inner.usage.flush(&self.inner.store, now_ms, all, &mut refused).await;
        for (id, local) in self.inner.spikes.note(now_ms, &refused) {
            if let Err(e) = self.check_spike(&id, local, now).await {
                tracing::warn!(key_id = %id, error = format!("{e:#}"), "failed to check a key's refusals for a spike");
            }
        }
        Ok(flushed?)
    }

    /// Counts one answered request of `key` and logs it (unless it is a
    /// successful verification): memory only, the request path's one call
    /// (see `usage`).
    pub fn record_request(&self, key: &LiveKey, facts: &RequestFacts) {
        self.inner.usage.record(&key.id, key.usage(), facts);
    }

    /// A key's usage over `period` at `now` (see `usage_report`): written
    /// counts from every instance plus this process's not yet written.
    pub async fn usage(&self, key: &KeyId, period: Period, now: DateTime<Utc>) -> Result<UsageReport> {
        let (from, to) = period.hours(now);
        // Added up in the database: bounded whatever the key did.
        let hours = self.inner.store.usage_buckets(key, from, to, period.bucket_hours()).await?;
        let (ips, distinct) = self.inner.store.usage_top_ips(key, from, to, usage_report::IPS_READ).await?;
        let (pending, pending_ips) = self.inner.usage.pending_for(key);
        let stored = usage_report::StoredIps { top: &ips, distinct };
        Ok(usage_report::build(key.as_str(), period, now, &hours, stored, &pending, &pending_ips))
    }

    /// One page of a key's request log, newest first (`limit` clamped to
    /// 1–100), older than the entry `before` when given. This process's
    /// entries not yet written are written first, so a request shows at once.
    pub async fn requests(&self, key: &KeyId, before: Option<i64>, limit: u32) -> Result<RequestPage> {
        self.write_request_log().await;
        let limit = limit.clamp(1, 100);
        let mut entries = self.inner.store.request_log(key, before, limit + 1, false).await?;
        let more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        let next_before = if more { entries.last().map(|e| e.id) } else { None };
        Ok(RequestPage { entries, next_before })
    }

    /// Writes this process's request log entries not yet written (before a
    /// read of the log); a failure leaves them for the next flush.
    pub(in crate::service) async fn write_request_log(&self) {
        if let Err(e) = self.inner.usage.flush_log(&self.inner.store).await {
            tracing::warn!(error = format!("{e:#}"), "failed to write the request log; will retry");
        }
    }

    /// What `/apikey info` shows of a key's usage at `now`: requests and
    /// errors over 24 hours and 7 days, and the latest `errors` refused or
    /// failed requests.
    pub async fn usage_summary(&self, key: &KeyId, now: DateTime<Utc>, errors: u32) -> Result<UsageSummary> {
        let totals = |r: &UsageReport| Totals { requests: r.total, errors: r.errors() };
        let day = self.usage(key, Period::Day, now).await?;
        let week = self.usage(key, Period::Week, now).await?;
        self.write_request_log().await;
        let recent_errors = self.inner.store.request_log(key, None, errors.clamp(1, 100), true).await?;
        Ok(UsageSummary { last_24h: totals(&day), last_7d: totals(&week), recent_errors })
    }

    /// The usage upkeep at `now`: drops the minute buckets of hours past
    /// `usage.minute_retention_hours` (their totals stay: the hour buckets),
    /// and hour and IP buckets and log entries past
    /// `usage.hour_retention_days`, and day-old alert states. Run hourly by
    /// the upkeep; idempotent, so every instance may run it.
    pub async fn maintain_usage(&self, now: DateTime<Utc>) -> Result<crate::store::UsageUpkeep> {
        let cfg = &self.inner.usage_cfg;
        let now_minute = super::minute_of(now.timestamp_millis());
        let days = i64::from(cfg.hour_retention_days);
        let upkeep = self
            .inner
            .store
            .prune_usage(
                now_minute - i64::from(cfg.minute_retention_hours) * 60,
                now_minute.div_euclid(60) - days * 24,
                now - chrono::Duration::days(days),
                now - chrono::Duration::days(1),
            )
            .await?;
        tracing::debug!(?upkeep, "usage upkeep");
        Ok(upkeep)
    }
}
