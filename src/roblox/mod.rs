//! The outbound port to the services Roblox games need, as `discord` is to
//! Discord: the account linkers that turn a Roblox id into Discord ids
//! (`linkers.rs`: Bloxlink, RoVer) and Roblox Open Cloud (`open_cloud.rs`:
//! MessagingService publish, user restrictions, the Secrets store). Base
//! URLs come from `[roblox]` (`https://`, or `http://` to loopback only).
//! The service calls these; nothing here holds a rule beyond the wire.

pub mod linkers;
pub mod open_cloud;

use std::time::Duration;

/// Why an outside service did not answer as asked. What a caller may see
/// of it never includes a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutsideError {
    /// The service answered with an error status.
    #[error("{service} answered HTTP {status}: {message}")]
    Refused { service: &'static str, status: u16, message: String },
    /// The service said to wait (429, or 503 with `Retry-After`).
    #[error("{service} is rate limiting guildkey; retry after {retry_after_secs} s")]
    Limited { service: &'static str, retry_after_secs: u64 },
    /// The service could not be reached, timed out, or answered nonsense.
    #[error("{service} is unavailable: {message}")]
    Unavailable { service: &'static str, message: String },
}

/// The HTTP client for outside services: rustls, a short connect timeout
/// and an overall `timeout` per call, no redirects (a credential header is
/// never replayed to another host).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(2).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// `Retry-After` in whole seconds (at least 1), if the answer has one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(|s| (s.ceil() as u64).max(1))
}
