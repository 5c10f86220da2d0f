//! Prometheus metrics for `/metrics`: requests by route and status, key
//! verification outcomes by reason, and a latency histogram. The registry
//! belongs to the application (no global state), so tests can run several.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub verifications: IntCounterVec,
    /// `verifications{outcome="ok"}`, resolved once: every request counts it.
    pub verified_ok: IntCounter,
    pub keys_indexed: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("guildkey".to_owned()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
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
        for c in [Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>, Box::new(latency.clone())] {
            registry.register(c).expect("unique metric");
        }
        registry.register(Box::new(verifications.clone())).expect("unique metric");
        registry.register(Box::new(keys_indexed.clone())).expect("unique metric");
        let verified_ok = verifications.with_label_values(&["ok"]);
        Self { registry, requests, latency, verifications, verified_ok, keys_indexed }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
