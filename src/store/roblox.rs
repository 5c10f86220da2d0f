//! What the store keeps for Roblox games: each guild's sealed third-party
//! credentials (`guild_credential`; sealing and opening are the service's,
//! `service::credentials`: the store never sees a credential in clear) and
//! the Roblox↔Discord pairs its linker answered (`roblox_link`). Each
//! statement once, for both backends (see `db_run!`).

use chrono::{DateTime, Utc};

use super::rows::{from_millis, id_from_sql, id_to_sql, to_millis};
use super::Store;

/// A guild's credential as stored: sealed, with what may be shown of it.
#[derive(Clone)]
pub struct SealedCredential {
    pub guild_id: u64,
    /// What the credential is for (`linker`, `open_cloud`).
    pub kind: String,
    /// What the operator may see (the linker's provider, a universe id).
    pub label: String,
    /// The credential sealed under `GUILDKEY_SECRETS_KEY`.
    pub sealed: String,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("guild_id", &self.guild_id)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    guild_id: i64,
    kind: String,
    label: String,
    sealed: String,
    updated_at: i64,
}

impl From<CredentialRow> for SealedCredential {
    fn from(r: CredentialRow) -> Self {
        Self {
            guild_id: id_from_sql(r.guild_id),
            kind: r.kind,
            label: r.label,
            sealed: r.sealed,
            updated_at: from_millis(r.updated_at),
        }
    }
}

const CREDENTIAL_COLUMNS: &str = "guild_id, kind, label, sealed, updated_at";

/// A Roblox account's Discord account in one guild, as its linker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RobloxLink {
    pub roblox_id: u64,
    pub discord_id: u64,
    pub resolved_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    roblox_id: i64,
    discord_id: i64,
    resolved_at: i64,
}

impl From<LinkRow> for RobloxLink {
    fn from(r: LinkRow) -> Self {
        Self {
            roblox_id: id_from_sql(r.roblox_id),
            discord_id: id_from_sql(r.discord_id),
            resolved_at: from_millis(r.resolved_at),
        }
    }
}

impl Store {
    /// Sets (or replaces) a guild's credential of one kind.
    pub async fn put_credential(
        &self,
        guild_id: u64,
        kind: &str,
        label: &str,
        sealed: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query(
                "insert into guild_credential (guild_id, kind, label, sealed, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $5) \
                 on conflict (guild_id, kind) do update set label = excluded.label, sealed = excluded.sealed, \
                 updated_at = excluded.updated_at",
            )
            .bind(id_to_sql(guild_id))
            .bind(kind)
            .bind(label)
            .bind(sealed)
            .bind(to_millis(now))
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }

    /// A guild's credential of one kind, sealed.
    pub async fn credential(&self, guild_id: u64, kind: &str) -> anyhow::Result<Option<SealedCredential>> {
        let sql = format!("select {CREDENTIAL_COLUMNS} from guild_credential where guild_id = $1 and kind = $2");
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, CredentialRow>(&sql).bind(id_to_sql(guild_id)).bind(kind).fetch_optional(&mut *c).await?
        });
        Ok(row.map(SealedCredential::from))
    }

    /// Every stored credential, sealed, in guild and kind order, after
    /// `after` (the last of the previous page), at most `limit`: what
    /// re-sealing under a new `GUILDKEY_SECRETS_KEY` walks.
    pub async fn credentials_page(
        &self,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> anyhow::Result<Vec<SealedCredential>> {
        let sql = format!(
            "select {CREDENTIAL_COLUMNS} from guild_credential \
             where cast($1 as bigint) is null or guild_id > $1 or (guild_id = $1 and kind > cast($2 as text)) \
             order by guild_id, kind limit $3"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, CredentialRow>(&sql)
                .bind(after.map(|(g, _)| id_to_sql(g)))
                .bind(after.map(|(_, k)| k.to_owned()))
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows.into_iter().map(SealedCredential::from).collect())
    }

    /// Removes a guild's credential of one kind; whether there was one.
    pub async fn delete_credential(&self, guild_id: u64, kind: &str) -> anyhow::Result<bool> {
        let done = db_run!(write self, |c| {
            sqlx::query("delete from guild_credential where guild_id = $1 and kind = $2")
                .bind(id_to_sql(guild_id))
                .bind(kind)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Records what the linker answered for a Roblox account: these Discord
    /// accounts, as of `now` (pairs it no longer names are dropped; an
    /// empty answer drops them all).
    pub async fn put_roblox_links(
        &self,
        guild_id: u64,
        roblox_id: u64,
        discord_ids: &[u64],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        db_run!(transaction self, |c| {
            sqlx::query("delete from roblox_link where guild_id = $1 and roblox_id = $2")
                .bind(id_to_sql(guild_id))
                .bind(id_to_sql(roblox_id))
                .execute(&mut *c)
                .await?;
            for &discord_id in discord_ids {
                sqlx::query(
                    "insert into roblox_link (guild_id, roblox_id, discord_id, resolved_at) values ($1, $2, $3, $4) \
                     on conflict (guild_id, roblox_id, discord_id) do update set resolved_at = excluded.resolved_at",
                )
                .bind(id_to_sql(guild_id))
                .bind(id_to_sql(roblox_id))
                .bind(id_to_sql(discord_id))
                .bind(to_millis(now))
                .execute(&mut *c)
                .await?;
            }
        });
        Ok(())
    }

    /// The Discord accounts stored for a Roblox account in a guild.
    pub async fn roblox_links(&self, guild_id: u64, roblox_id: u64) -> anyhow::Result<Vec<RobloxLink>> {
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, LinkRow>(
                "select roblox_id, discord_id, resolved_at from roblox_link \
                 where guild_id = $1 and roblox_id = $2 order by discord_id",
            )
            .bind(id_to_sql(guild_id))
            .bind(id_to_sql(roblox_id))
            .fetch_all(&mut *c)
            .await?
        });
        Ok(rows.into_iter().map(RobloxLink::from).collect())
    }

    /// The Roblox accounts stored for these Discord accounts in a guild
    /// (what a ban export and a push name): pairs in Discord id order.
    pub async fn roblox_ids_of(&self, guild_id: u64, discord_ids: &[u64]) -> anyhow::Result<Vec<RobloxLink>> {
        if discord_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // One statement per chunk; both databases take a list of binds.
        for chunk in discord_ids.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "select roblox_id, discord_id, resolved_at from roblox_link \
                 where guild_id = $1 and discord_id in ({}) order by discord_id, roblox_id",
                marks.join(", ")
            );
            let rows = db_run!(read self, |c| {
                let mut q = sqlx::query_as::<_, LinkRow>(&sql).bind(id_to_sql(guild_id));
                for &id in chunk {
                    q = q.bind(id_to_sql(id));
                }
                q.fetch_all(&mut *c).await?
            });
            out.extend(rows.into_iter().map(RobloxLink::from));
        }
        out.sort_by_key(|l| (l.discord_id, l.roblox_id));
        Ok(out)
    }
}
