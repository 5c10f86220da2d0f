//! How the Discord bot is doing, as `/healthz` reports it. The listener
//! keeps serving keys whatever Discord does: a refused token or an
//! unreachable Discord is a state the bot retries out of, not a reason to
//! stop the process.

use std::sync::Mutex;

use serde::Serialize;

/// The bot's state in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotState {
    /// This process runs no bot (`--only http`).
    Off,
    /// Connecting to Discord (at start, or again after a failure).
    Connecting,
    /// Connected: the gateway session is ready.
    Connected,
    /// Discord refused the bot token (401); retrying.
    TokenRefused,
    /// Discord could not be reached; retrying.
    Unreachable,
    /// The gateway stopped for another reason; retrying.
    Failed,
}

/// The bot's current state, shared by the bot's supervisor (which sets it)
/// and the listener (which reports it).
#[derive(Debug)]
pub struct BotHealth(Mutex<BotState>);

impl BotHealth {
    pub fn new(state: BotState) -> Self {
        Self(Mutex::new(state))
    }

    pub fn set(&self, state: BotState) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn get(&self) -> BotState {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
