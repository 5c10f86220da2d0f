//! Logging: a `tracing` subscriber writing to stderr (stdout belongs to the
//! CLI's output), `pretty` or `json`, level from `RUST_LOG` (default `info` for `run`, `warn` for the CLI's
//! one-shot commands).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber already set (tests) is not an error.
    let _ = result;
}
