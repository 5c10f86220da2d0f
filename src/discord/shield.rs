//! The shield's count: Discord's invalid answers (401, 403, 429), per
//! guild and in all, so the service can stop calling Discord for a guild
//! that keeps getting refused before Discord cuts the bot off everywhere.

use std::time::Duration;

/// The length of Discord's invalid-request window.
pub const INVALID_WINDOW: Duration = Duration::from_secs(600);

/// Discord's answers that count against its invalid-request limit (401,
/// 403 and 429: 10,000 in 10 minutes from one IP, and the bot is cut off
/// from the API for every guild), counted per guild and in all over the
/// last [`INVALID_WINDOW`]. The service reads it to stop calling Discord
/// for a guild that keeps getting refused.
#[derive(Default)]
pub struct InvalidAnswers {
    inner: std::sync::Mutex<InvalidInner>,
}

#[derive(Default)]
struct InvalidInner {
    /// Per guild, the times of its recent invalid answers, oldest first;
    /// at most [`InvalidAnswers::KEPT_PER_GUILD`].
    guilds: std::collections::HashMap<u64, std::collections::VecDeque<std::time::Instant>>,
    /// In all: (minute since start, count) for the last ten minutes.
    minutes: std::collections::VecDeque<(u64, u64)>,
    started: Option<std::time::Instant>,
    total: u64,
}

impl InvalidAnswers {
    /// More than any sane per-guild budget; bounds the memory a guild costs.
    pub const KEPT_PER_GUILD: usize = 1024;

    /// Counts one invalid answer (for a guild, if the request was for one).
    pub fn record(&self, guild_id: Option<u64>) {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock().expect("invalid answers lock poisoned");
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
    }

    /// A guild's invalid answers over the last window, and how long until
    /// the oldest of the newest `keep` of them leaves it (when the count
    /// would drop below `keep` again).
    pub fn recent(&self, guild_id: u64, keep: usize) -> (usize, Duration) {
        let mut inner = self.inner.lock().expect("invalid answers lock poisoned");
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

    /// Invalid answers in all over about the last ten minutes (a metric).
    pub fn recent_total(&self) -> u64 {
        let inner = self.inner.lock().expect("invalid answers lock poisoned");
        let Some(started) = inner.started else { return 0 };
        let minute = started.elapsed().as_secs() / 60;
        inner.minutes.iter().filter(|(m, _)| m + 10 > minute).map(|(_, n)| n).sum()
    }

    /// Invalid answers since start (a metric).
    pub fn total(&self) -> u64 {
        self.inner.lock().expect("invalid answers lock poisoned").total
    }
}
