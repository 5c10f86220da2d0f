//! Logging: a `tracing` subscriber writing to stderr (stdout belongs to the
//! CLI's output), `pretty` or `json`, level from `RUST_LOG` (default `info` for `run`, `warn` for the CLI's
//! one-shot commands).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Targets whose trace lines hold whole gateway payloads: an interaction's
/// options may carry a credential an admin typed (`/roblox linker key:`),
/// so these never log below debug, whatever `RUST_LOG` says.
const PAYLOAD_TARGETS: [&str; 2] = ["tungstenite=debug", "tokio_tungstenite=debug"];

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, default_level: &str) {
    // A RUST_LOG that does not parse keeps what does and says what did not
    // (once the subscriber is up), rather than logging at the default
    // level without a word.
    let raw = std::env::var(EnvFilter::DEFAULT_ENV).ok().filter(|v| !v.trim().is_empty());
    let (filter, bad) = match raw {
        None => (EnvFilter::new(default_level), None),
        Some(raw) => match EnvFilter::try_new(&raw) {
            Ok(filter) => (filter, None),
            Err(e) => {
                let kept = raw.split(',').filter_map(|d| d.trim().parse().ok());
                (kept.fold(EnvFilter::new(default_level), EnvFilter::add_directive), Some(e.to_string()))
            }
        },
    };
    let filter = PAYLOAD_TARGETS.iter().filter_map(|d| d.parse().ok()).fold(filter, EnvFilter::add_directive);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber already set (tests) is not an error.
    let _ = result;
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG has a directive that does not parse ({e}); it is ignored");
    }
}
