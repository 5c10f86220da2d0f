//! The reconcile of API writes left pending: a process killed between
//! recording a write and recording its outcome (or whose Discord call could
//! not tell) leaves a pending event; this reads the ban or member on
//! Discord and settles it ([`GuildActions::reconcile`]), so the audit log
//! and the audit channel get the write if, and only if, Discord has it.
//!
//! At start it takes every event left pending before this process started
//! when the database is its alone (SQLite: one instance writes); on a
//! shared database (PostgreSQL, several instances) an event is another
//! instance's until its writer's time runs out ([`PENDING_FOR`]). Then it
//! looks again every [`EVERY`] for events whose writer's time ran out.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::super::actions::GuildActions;
use super::super::audit::PENDING_FOR;

/// How often pending events whose writer's time ran out are looked for.
pub const EVERY: Duration = Duration::from_secs(10);

/// Settles pending writes until `stop` resolves.
pub async fn run(actions: Arc<GuildActions>, stop: impl std::future::Future<Output = ()>) {
    let started = actions.keys().now();
    let alone = !actions.keys().store().is_shared();
    tokio::pin!(stop);
    loop {
        match settle_pending(&actions, due_by(actions.keys().now(), started, alone)).await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "settled API writes left pending"),
            Err(e) => tracing::warn!(error = %e, "failed to read API writes left pending"),
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// The events due: those whose writer's time ran out by now, and on a
/// database this process writes alone, every one recorded before it started
/// (their writer is gone).
fn due_by(now: DateTime<Utc>, started: DateTime<Utc>, alone: bool) -> DateTime<Utc> {
    let pending_for = chrono::Duration::from_std(PENDING_FOR).unwrap_or_default();
    if alone {
        now.max(started + pending_for)
    } else {
        now
    }
}

/// Settles every pending event due by `due_by`; returns how many. One that
/// Discord cannot be asked about now stays pending for the next pass.
pub async fn settle_pending(actions: &GuildActions, due_by: DateTime<Utc>) -> super::super::Result<usize> {
    let events = actions.keys().pending_writes(due_by, 100).await?;
    let mut settled = 0;
    for event in &events {
        match actions.reconcile(event).await {
            Ok(done) => {
                settled += 1;
                tracing::info!(
                    event_id = event.id,
                    guild_id = event.guild_id,
                    action = event.action.as_str(),
                    done,
                    "settled an API write left pending from what Discord shows"
                );
            }
            Err(e) => tracing::warn!(
                event_id = event.id,
                guild_id = event.guild_id,
                error = %e,
                "could not settle an API write left pending; trying again later"
            ),
        }
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_every_event_from_before_the_start_is_due_at_once() {
        let started = Utc::now();
        let pending_for = chrono::Duration::from_std(PENDING_FOR).unwrap();
        // An event recorded a moment before the start is due by then...
        assert!(due_by(started, started, true) >= started - chrono::Duration::milliseconds(1) + pending_for);
        // ...but on a shared database only once its writer's time ran out.
        assert!(due_by(started, started, false) < started - chrono::Duration::milliseconds(1) + pending_for);
        // Later, whatever ran out is due either way.
        let later = started + pending_for * 2;
        assert_eq!(due_by(later, started, true), later);
        assert_eq!(due_by(later, started, false), later);
    }
}
