//! Prometheus metrics for `/metrics`: requests by route and status, key
//! verification outcomes by reason, and a latency histogram. The registry
//! belongs to the application (no global state), so tests can run several.

use crate::service::index::IndexStats;
use crate::service::lease::LeaseStats;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// How the key index followed other processes' commits (copied from
    /// the service's own counts at each scrape; see `observe_index`).
    index_full_loads: IntCounter,
    index_keys_applied: IntCounter,
    /// Scrapes copy the index's counts one at a time.
    index_sync: std::sync::Mutex<()>,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub verifications: IntCounterVec,
    /// `verifications{outcome="ok"}`, resolved once: every request counts it.
    pub verified_ok: IntCounter,
    keys_indexed: IntGauge,
    /// The ban lists in memory (`service::ban_lists`): bans held, and bytes.
    ban_list_bans: IntGauge,
    ban_list_bytes: IntGauge,
    /// Discord's invalid answers (401, 403, 429) over about the last 10
    /// minutes: Discord cuts the bot off at 10,000 from one IP.
    discord_invalid_recent: IntGauge,
    discord_invalid_total: IntCounter,
    /// The same over every instance of the bot (shared through the
    /// database), the bot-wide budget it is held under, and the guilds
    /// paused now.
    discord_invalid_bot: IntGauge,
    discord_bot_budget: IntGauge,
    discord_paused_guilds: IntGauge,
    /// The rate limit shared by instances (`service::lease`).
    rate_instances: IntGauge,
    rate_leases: IntCounter,
    rate_local_only: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("guildkey".to_owned()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method (other for non-standard ones) and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                // From 10 µs: a verification is served in tens of microseconds.
                .buckets(vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &["route"],
        )
        .expect("valid metric");
        let verifications = IntCounterVec::new(
            Opts::new("key_verifications_total", "API key verification outcomes (ok, or the error reason)"),
            &["outcome"],
        )
        .expect("valid metric");
        let keys_indexed = IntGauge::new("keys_indexed", "Key hashes held in the in-memory index").expect("valid");
        let ban_list_bans =
            IntGauge::new("ban_list_bans", "Bans held in the in-memory ban lists, every guild").expect("valid");
        let ban_list_bytes =
            IntGauge::new("ban_list_bytes", "Bytes the in-memory ban lists hold (their ids and map)").expect("valid");
        let index_full_loads = IntCounter::new(
            "key_index_full_loads_total",
            "Loads of every key into the in-memory index (the first at start; later ones when another process \
             changed too many keys at once to apply them one by one)",
        )
        .expect("valid");
        let discord_invalid_recent = IntGauge::new(
            "discord_invalid_requests_10m",
            "Discord answers that count towards its invalid-request limit (401, 403, 429) over about the last \
             10 minutes; Discord cuts the bot off from its API at 10,000",
        )
        .expect("valid");
        let discord_invalid_total = IntCounter::new(
            "discord_invalid_requests_total",
            "Discord answers that count towards its invalid-request limit (401, 403, 429) since start",
        )
        .expect("valid");
        let discord_invalid_bot = IntGauge::new(
            "discord_invalid_requests_bot_10m",
            "Discord's invalid answers over about the last 10 minutes, every instance of the bot together (what \
             discord.bot_invalid_request_budget holds)",
        )
        .expect("valid");
        let discord_bot_budget = IntGauge::new(
            "discord_invalid_request_budget_bot",
            "discord.bot_invalid_request_budget: the invalid answers the whole bot may earn in 10 minutes",
        )
        .expect("valid");
        let discord_paused_guilds = IntGauge::new(
            "discord_paused_guilds",
            "Guilds whose Discord calls are paused now (their own budget spent, or the bot's running out)",
        )
        .expect("valid");
        let index_keys_applied = IntCounter::new(
            "key_index_keys_applied_total",
            "Keys changed by another process (the CLI, a second instance) applied to the index one by one",
        )
        .expect("valid");
        let rate_instances = IntGauge::new(
            "rate_limit_instances",
            "Instances sharing each key's rate limit through the database, by their heartbeats (0: not shared)",
        )
        .expect("valid");
        let rate_leases = IntCounter::new(
            "rate_limit_leases_total",
            "Chunks of keys' per-minute budgets leased from the shared database",
        )
        .expect("valid");
        let rate_local_only = IntGauge::new(
            "rate_limit_local_only",
            "1 while the shared database cannot be reached and each instance holds rate limits on its own",
        )
        .expect("valid");
        for c in [Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>, Box::new(latency.clone())] {
            registry.register(c).expect("unique metric");
        }
        registry.register(Box::new(verifications.clone())).expect("unique metric");
        registry.register(Box::new(keys_indexed.clone())).expect("unique metric");
        registry.register(Box::new(ban_list_bans.clone())).expect("unique metric");
        registry.register(Box::new(ban_list_bytes.clone())).expect("unique metric");
        registry.register(Box::new(index_full_loads.clone())).expect("unique metric");
        registry.register(Box::new(index_keys_applied.clone())).expect("unique metric");
        registry.register(Box::new(discord_invalid_recent.clone())).expect("unique metric");
        registry.register(Box::new(discord_invalid_total.clone())).expect("unique metric");
        registry.register(Box::new(discord_invalid_bot.clone())).expect("unique metric");
        registry.register(Box::new(discord_bot_budget.clone())).expect("unique metric");
        registry.register(Box::new(discord_paused_guilds.clone())).expect("unique metric");
        registry.register(Box::new(rate_instances.clone())).expect("unique metric");
        registry.register(Box::new(rate_leases.clone())).expect("unique metric");
        registry.register(Box::new(rate_local_only.clone())).expect("unique metric");
        let verified_ok = verifications.with_label_values(&["ok"]);
        Self {
            registry,
            index_full_loads,
            index_keys_applied,
            index_sync: std::sync::Mutex::new(()),
            requests,
            latency,
            verifications,
            verified_ok,
            keys_indexed,
            ban_list_bans,
            ban_list_bytes,
            discord_invalid_recent,
            discord_invalid_total,
            discord_invalid_bot,
            discord_bot_budget,
            discord_paused_guilds,
            rate_instances,
            rate_leases,
            rate_local_only,
        }
    }

    /// Brings the shared rate limit's figures up to date.
    pub fn observe_leases(&self, stats: LeaseStats) {
        self.rate_instances.set(if stats.enabled { i64::from(stats.instances) } else { 0 });
        self.rate_local_only.set(i64::from(stats.enabled && stats.down));
        let _one_at_a_time = self.index_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.rate_leases.inc_by(stats.leases.saturating_sub(self.rate_leases.get()));
    }

    /// Brings the index's figures up to date (before a scrape renders them).
    pub fn observe_index(&self, indexed: usize, stats: IndexStats) {
        self.keys_indexed.set(indexed as i64);
        let _one_at_a_time = self.index_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (counter, now) in
            [(&self.index_full_loads, stats.full_loads), (&self.index_keys_applied, stats.keys_applied)]
        {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    /// Brings the ban lists' figures up to date.
    pub fn observe_ban_lists(&self, size: crate::service::ban_lists::BanListsSize) {
        self.ban_list_bans.set(i64::try_from(size.bans).unwrap_or(i64::MAX));
        self.ban_list_bytes.set(i64::try_from(size.bytes).unwrap_or(i64::MAX));
    }

    /// Brings Discord's invalid-answer figures up to date.
    pub fn observe_discord(
        &self,
        invalid: Option<&crate::discord::InvalidAnswers>,
        guard: &crate::service::guard::DiscordGuard,
    ) {
        self.discord_bot_budget.set(i64::from(guard.bot_budget()));
        let Some(invalid) = invalid else { return };
        self.discord_invalid_recent.set(i64::try_from(invalid.recent_total()).unwrap_or(i64::MAX));
        self.discord_invalid_bot.set(i64::try_from(invalid.bot_total()).unwrap_or(i64::MAX));
        self.discord_paused_guilds.set(i64::try_from(guard.paused_guilds(invalid)).unwrap_or(i64::MAX));
        let _one_at_a_time = self.index_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.discord_invalid_total.inc_by(invalid.total().saturating_sub(self.discord_invalid_total.get()));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// The `method` label: a standard method's name, else `other`. The label
/// never copies what a client sent, so made-up methods (any token of any
/// length, no key needed) cannot grow the registry or `/metrics`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
