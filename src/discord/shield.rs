//! The shield's count: Discord's invalid answers (401, 403, 429), per
//! guild and in all, so the service can stop calling Discord for a guild
//! that keeps getting refused before Discord cuts the bot off everywhere.
//!
//! Discord counts per IP, so per bot: several instances of one bot count
//! together. Each instance counts its own answers here exactly, hands the
//! ones not yet shared to the service ([`InvalidAnswers::take_unshared`],
//! written to the database by minute) and holds what the other instances
//! counted ([`InvalidAnswers::set_elsewhere`], read back from it); what the
//! guard reads ([`InvalidAnswers::spent`]) is both together.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The length of Discord's invalid-request window.
pub const INVALID_WINDOW: Duration = Duration::from_secs(600);

/// The guild id under which answers for no guild are shared.
pub const NO_GUILD: u64 = 0;

/// Discord's answers that count against its invalid-request limit (401,
/// 403 and 429: 10,000 in 10 minutes from one IP, and the bot is cut off
/// from the API for every guild), counted per guild and in all over the
/// last [`INVALID_WINDOW`]. The service reads it to stop calling Discord
/// for a guild that keeps getting refused.
#[derive(Default)]
pub struct InvalidAnswers {
    inner: std::sync::Mutex<InvalidInner>,
    /// Told at each answer counted: the service shares it at once.
    counted: tokio::sync::Notify,
}

#[derive(Default)]
struct InvalidInner {
    /// Per guild, the times of its recent invalid answers, oldest first;
    /// at most [`InvalidAnswers::KEPT_PER_GUILD`].
    guilds: HashMap<u64, VecDeque<Instant>>,
    /// In all: (minute since start, count) for the last ten minutes.
    minutes: VecDeque<(u64, u64)>,
    started: Option<Instant>,
    total: u64,
    /// Counted here and not yet shared: by (guild, minute since the epoch).
    unshared: HashMap<(u64, i64), u64>,
    /// What the other instances counted, as last read.
    elsewhere: Elsewhere,
}

/// The invalid answers other instances of the bot counted over about the
/// last [`INVALID_WINDOW`], per guild ([`NO_GUILD`] for none) and in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elsewhere {
    pub guilds: HashMap<u64, u64>,
    pub total: u64,
}

/// What a guild and the bot have spent of Discord's patience: the guild's
/// invalid answers over the window (every instance's), how long until this
/// instance's oldest of the newest `keep` leaves it, and the bot's in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub guild: usize,
    pub frees_in: Duration,
    pub total: u64,
}

/// Minutes since the Unix epoch, by the wall clock (instances agree on it).
pub fn epoch_minute() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    ms.div_euclid(60_000)
}

impl InvalidAnswers {
    /// More than any sane per-guild budget; bounds the memory a guild costs.
    pub const KEPT_PER_GUILD: usize = 1024;
    /// Unshared (guild, minute) cells held while the database cannot take
    /// them; past it, the rest are shared as [`NO_GUILD`]'s.
    const MAX_UNSHARED: usize = 20_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, InvalidInner> {
        // Counts only: what a panicking holder left is still worth counting on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one invalid answer (for a guild, if the request was for one).
    pub fn record(&self, guild_id: Option<u64>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let started = *inner.started.get_or_insert(now);
        let minute = now.duration_since(started).as_secs() / 60;
        match inner.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => inner.minutes.push_back((minute, 1)),
        }
        while inner.minutes.front().is_some_and(|(m, _)| *m + 10 <= minute) {
            inner.minutes.pop_front();
        }
        inner.total += 1;
        let mut shared_as = guild_id.unwrap_or(NO_GUILD);
        if inner.unshared.len() >= Self::MAX_UNSHARED && !inner.unshared.contains_key(&(shared_as, epoch_minute())) {
            shared_as = NO_GUILD;
        }
        *inner.unshared.entry((shared_as, epoch_minute())).or_default() += 1;
        if let Some(guild_id) = guild_id {
            if inner.guilds.len() >= 10_000 && !inner.guilds.contains_key(&guild_id) {
                inner.guilds.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < INVALID_WINDOW));
            }
            let times = inner.guilds.entry(guild_id).or_default();
            while times.front().is_some_and(|t| t.elapsed() >= INVALID_WINDOW) || times.len() >= Self::KEPT_PER_GUILD {
                times.pop_front();
            }
            times.push_back(now);
        }
        drop(inner);
        self.counted.notify_one();
    }

    /// Resolves once an answer was counted since the last call (at once if
    /// one was counted meanwhile).
    pub async fn counted(&self) {
        self.counted.notified().await;
    }

    /// A guild's invalid answers over the last window, and how long until
    /// the oldest of the newest `keep` of them leaves it (when the count
    /// would drop below `keep` again). This instance's alone.
    pub fn recent(&self, guild_id: u64, keep: usize) -> (usize, Duration) {
        let mut inner = self.lock();
        local_recent(&mut inner, guild_id, keep)
    }

    /// What the guild and the bot have spent, every instance's answers
    /// together ([`Spent`]); `keep` as in [`Self::recent`].
    pub fn spent(&self, guild_id: u64, keep: usize) -> Spent {
        let mut inner = self.lock();
        let (local, frees_in) = local_recent(&mut inner, guild_id, keep);
        let elsewhere = inner.elsewhere.guilds.get(&guild_id).copied().unwrap_or(0);
        let guild = local.saturating_add(usize::try_from(elsewhere).unwrap_or(usize::MAX));
        let total = local_total(&inner).saturating_add(inner.elsewhere.total);
        Spent { guild, frees_in, total }
    }

    /// The bot's invalid answers in all, every instance's: the total of
    /// [`Self::spent`].
    pub fn bot_total(&self) -> u64 {
        let inner = self.lock();
        local_total(&inner).saturating_add(inner.elsewhere.total)
    }

    /// Each guild with invalid answers over the window and its count,
    /// every instance's together (for the count of paused guilds).
    pub fn guild_counts(&self) -> Vec<(u64, usize)> {
        let mut inner = self.lock();
        let mut counts: HashMap<u64, usize> =
            inner.elsewhere.guilds.iter().map(|(g, n)| (*g, usize::try_from(*n).unwrap_or(usize::MAX))).collect();
        counts.remove(&NO_GUILD);
        inner.guilds.retain(|_, times| {
            while times.front().is_some_and(|t| t.elapsed() >= INVALID_WINDOW) {
                times.pop_front();
            }
            !times.is_empty()
        });
        for (g, times) in &inner.guilds {
            *counts.entry(*g).or_default() += times.len();
        }
        counts.into_iter().collect()
    }

    /// Takes the answers counted here and not yet shared, as (guild or
    /// [`NO_GUILD`], minute since the epoch, count).
    pub fn take_unshared(&self) -> Vec<(u64, i64, u64)> {
        let taken = std::mem::take(&mut self.lock().unshared);
        taken.into_iter().map(|((g, m), n)| (g, m, n)).collect()
    }

    /// Puts back answers [`Self::take_unshared`] took that could not be
    /// shared (the database did not take them), for the next try.
    pub fn give_back(&self, cells: Vec<(u64, i64, u64)>) {
        let mut inner = self.lock();
        for (g, m, n) in cells {
            *inner.unshared.entry((g, m)).or_default() += n;
        }
    }

    /// What the other instances counted, as just read.
    pub fn set_elsewhere(&self, elsewhere: Elsewhere) {
        self.lock().elsewhere = elsewhere;
    }

    /// Invalid answers in all over about the last ten minutes, this
    /// instance's (a metric).
    pub fn recent_total(&self) -> u64 {
        local_total(&self.lock())
    }

    /// Invalid answers since start (a metric).
    pub fn total(&self) -> u64 {
        self.lock().total
    }
}

fn local_recent(inner: &mut InvalidInner, guild_id: u64, keep: usize) -> (usize, Duration) {
    let Some(times) = inner.guilds.get_mut(&guild_id) else { return (0, Duration::ZERO) };
    while times.front().is_some_and(|t| t.elapsed() >= INVALID_WINDOW) {
        times.pop_front();
    }
    let n = times.len();
    let leaves = n
        .checked_sub(keep.max(1))
        .and_then(|i| times.get(i))
        .map_or(Duration::ZERO, |t| INVALID_WINDOW.saturating_sub(t.elapsed()));
    (n, leaves)
}

fn local_total(inner: &InvalidInner) -> u64 {
    let Some(started) = inner.started else { return 0 };
    let minute = started.elapsed().as_secs() / 60;
    inner.minutes.iter().filter(|(m, _)| m + 10 > minute).map(|(_, n)| n).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_spent_adds_this_instances_answers_to_the_others() {
        let invalid = InvalidAnswers::default();
        for _ in 0..3 {
            invalid.record(Some(7));
        }
        invalid.record(None);
        assert_eq!(invalid.spent(7, 10), Spent { guild: 3, frees_in: Duration::ZERO, total: 4 });
        invalid.set_elsewhere(Elsewhere { guilds: HashMap::from([(7, 5), (8, 2)]), total: 9 });
        let spent = invalid.spent(7, 10);
        assert_eq!((spent.guild, spent.total), (8, 13));
        assert_eq!(invalid.spent(8, 10).guild, 2);
        let mut counts = invalid.guild_counts();
        counts.sort_unstable();
        assert_eq!(counts, [(7, 8), (8, 2)]);

        let mut taken = invalid.take_unshared();
        taken.sort_unstable();
        assert_eq!(taken.iter().map(|(g, _, n)| (*g, *n)).collect::<Vec<_>>(), [(NO_GUILD, 1), (7, 3)]);
        assert!(invalid.take_unshared().is_empty(), "taken once");
        invalid.give_back(taken);
        assert_eq!(invalid.take_unshared().iter().map(|(_, _, n)| n).sum::<u64>(), 4, "given back for the next try");
        assert_eq!(invalid.spent(7, 10).guild, 8, "sharing moves nothing out of this instance's own count");
    }
}
