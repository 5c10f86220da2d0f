//! Each guild's ban list as the bot last knew it (`guild_ban`), the state of
//! its sync (`guild_ban_sync`), and the change log listeners without the
//! gateway follow (`guild_ban_change`, written by triggers: see migration
//! 0043). Each statement once, for both backends (see `db_run!`).

use chrono::{DateTime, Utc};

use super::rows::{id_from_sql, id_to_sql, to_millis};
use super::Store;

/// A guild's sync state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BanSyncState {
    /// A whole sync finished (and the bot still hears ban events).
    pub complete: bool,
    /// A sync under way: the `after` of its next page.
    pub sync_after: Option<u64>,
}

/// One entry of the ban change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanChange {
    pub seq: i64,
    pub guild_id: u64,
    /// `None`: the guild's sync state changed (read it again).
    pub user_id: Option<u64>,
    pub banned: bool,
}

/// The ban change log after an entry, or `None` when entries since were
/// dropped (the follower loads the lists whole).
#[derive(Debug, Clone, Default)]
pub struct BanChanges {
    pub changes: Vec<BanChange>,
}

#[derive(sqlx::FromRow)]
struct SyncRow {
    guild_id: i64,
    complete: bool,
    sync_after: Option<i64>,
}

/// Rows a multi-row statement carries at once (binds stay far below both
/// databases' limits).
const CHUNK: usize = 500;

impl Store {
    /// Every guild's sync state.
    pub async fn ban_sync_states(&self) -> anyhow::Result<Vec<(u64, BanSyncState)>> {
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, SyncRow>("select guild_id, complete, sync_after from guild_ban_sync")
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| {
                let state = BanSyncState { complete: r.complete, sync_after: r.sync_after.map(id_from_sql) };
                (id_from_sql(r.guild_id), state)
            })
            .collect())
    }

    /// One guild's sync state (default: never synced).
    pub async fn ban_sync_state(&self, guild_id: u64) -> anyhow::Result<BanSyncState> {
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, SyncRow>("select guild_id, complete, sync_after from guild_ban_sync where guild_id = $1")
                .bind(id_to_sql(guild_id))
                .fetch_optional(&mut *c)
                .await?
        });
        Ok(row.map_or_else(BanSyncState::default, |r| BanSyncState {
            complete: r.complete,
            sync_after: r.sync_after.map(id_from_sql),
        }))
    }

    /// A guild's banned user ids, ascending.
    pub async fn guild_ban_ids(&self, guild_id: u64) -> anyhow::Result<Vec<u64>> {
        let rows: Vec<(i64,)> = db_run!(read self, |c| {
            sqlx::query_as("select user_id from guild_ban where guild_id = $1 order by user_id")
                .bind(id_to_sql(guild_id))
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows.into_iter().map(|(u,)| id_from_sql(u)).collect())
    }

    /// The reason stored for a ban (`None` also when none is known).
    pub async fn guild_ban_reason(&self, guild_id: u64, user_id: u64) -> anyhow::Result<Option<String>> {
        let row: Option<(Option<String>,)> = db_run!(read self, |c| {
            sqlx::query_as("select reason from guild_ban where guild_id = $1 and user_id = $2")
                .bind(id_to_sql(guild_id))
                .bind(id_to_sql(user_id))
                .fetch_optional(&mut *c)
                .await?
        });
        Ok(row.and_then(|(r,)| r))
    }

    /// Records one ban (`reason` replaces a stored one only when given) or
    /// unban, as the gateway or this deployment's own write said.
    pub async fn put_guild_ban(
        &self,
        guild_id: u64,
        user_id: u64,
        banned: bool,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            if banned {
                sqlx::query(
                    "insert into guild_ban (guild_id, user_id, reason) values ($1, $2, $3) \
                     on conflict (guild_id, user_id) do update set reason = coalesce(excluded.reason, guild_ban.reason)",
                )
                .bind(id_to_sql(guild_id))
                .bind(id_to_sql(user_id))
                .bind(reason)
                .execute(&mut *c)
                .await?;
            } else {
                sqlx::query("delete from guild_ban where guild_id = $1 and user_id = $2")
                    .bind(id_to_sql(guild_id))
                    .bind(id_to_sql(user_id))
                    .execute(&mut *c)
                    .await?;
            }
        });
        Ok(())
    }

    /// Sets the reason of a stored ban (none stored: nothing changes).
    pub async fn set_guild_ban_reason(&self, guild_id: u64, user_id: u64, reason: &str) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query("update guild_ban set reason = $3 where guild_id = $1 and user_id = $2")
                .bind(id_to_sql(guild_id))
                .bind(id_to_sql(user_id))
                .bind(reason)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// One page of a sync: adds these bans, drops those, and moves the
    /// sync on (`next_after` the next page's `after`; `None`: the sync is
    /// done, and with `complete` the list is complete as of `now`), in one
    /// transaction.
    pub async fn apply_ban_page(
        &self,
        guild_id: u64,
        added: &[(u64, Option<String>)],
        removed: &[u64],
        next_after: Option<u64>,
        complete: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let g = id_to_sql(guild_id);
        let add_sql: Vec<String> = added
            .chunks(CHUNK)
            .map(|chunk| {
                let rows: Vec<String> =
                    (0..chunk.len()).map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3)).collect();
                format!(
                    "insert into guild_ban (guild_id, user_id, reason) values {} \
                     on conflict (guild_id, user_id) do nothing",
                    rows.join(", ")
                )
            })
            .collect();
        let remove_sql: Vec<String> = removed
            .chunks(CHUNK)
            .map(|chunk| {
                let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                format!("delete from guild_ban where guild_id = $1 and user_id in ({})", marks.join(", "))
            })
            .collect();
        db_run!(transaction self, |tx| {
            for (sql, chunk) in add_sql.iter().zip(added.chunks(CHUNK)) {
                let mut q = sqlx::query(sql).bind(g);
                for (user, reason) in chunk {
                    q = q.bind(id_to_sql(*user)).bind(reason.as_deref());
                }
                q.execute(&mut *tx).await?;
            }
            for (sql, chunk) in remove_sql.iter().zip(removed.chunks(CHUNK)) {
                let mut q = sqlx::query(sql).bind(g);
                for user in chunk {
                    q = q.bind(id_to_sql(*user));
                }
                q.execute(&mut *tx).await?;
            }
            let done = next_after.is_none() && complete;
            sqlx::query(
                "insert into guild_ban_sync (guild_id, complete, synced_at, sync_after, updated_at) \
                 values ($1, $2, case when $2 then $4 else null end, $3, $4) \
                 on conflict (guild_id) do update set complete = guild_ban_sync.complete or excluded.complete, \
                 synced_at = coalesce(excluded.synced_at, guild_ban_sync.synced_at), \
                 sync_after = excluded.sync_after, updated_at = excluded.updated_at",
            )
            .bind(g)
            .bind(done)
            .bind(next_after.map(id_to_sql))
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Marks a guild's list as no longer complete (the bot stopped hearing
    /// its ban events): checks ask Discord again until a sync finishes.
    pub async fn mark_ban_list_stale(&self, guild_id: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query("update guild_ban_sync set complete = $2, updated_at = $3 where guild_id = $1")
                .bind(id_to_sql(guild_id))
                .bind(false)
                .bind(to_millis(now))
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// The newest entry of the ban change log (0 when empty): where a full
    /// load starts following it.
    pub async fn ban_change_head(&self) -> anyhow::Result<i64> {
        let (seq,): (Option<i64>,) = db_run!(read self, |c| {
            sqlx::query_as("select max(seq) from guild_ban_change").fetch_one(&mut *c).await?
        });
        Ok(seq.unwrap_or(0))
    }

    /// The ban changes after entry `after`, oldest first, at most `limit`;
    /// `None` when the log no longer holds every entry since `after`.
    pub async fn ban_changes_since(&self, after: i64, limit: usize) -> anyhow::Result<Option<BanChanges>> {
        let (oldest, rows) = db_run!(snapshot self, |tx| {
            let (oldest,): (Option<i64>,) =
                sqlx::query_as("select min(seq) from guild_ban_change").fetch_one(&mut *tx).await?;
            let rows: Vec<(i64, i64, Option<i64>, bool)> = sqlx::query_as(
                "select seq, guild_id, user_id, banned from guild_ban_change where seq > $1 order by seq limit $2",
            )
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            (oldest, rows)
        });
        // Entries after `after` were dropped: the oldest kept is past the next.
        if oldest.is_some_and(|o| o > after + 1) && after > 0 {
            return Ok(None);
        }
        let changes = rows
            .into_iter()
            .map(|(seq, g, u, banned)| BanChange { seq, guild_id: id_from_sql(g), user_id: u.map(id_from_sql), banned })
            .collect();
        Ok(Some(BanChanges { changes }))
    }
}
