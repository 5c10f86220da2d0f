//! The suite-wide secret scan (see the `support` module docs): where a full
//! key or the bot token may never appear, and the one place a key may.

use super::{db_cells, App, BOT_TOKEN};

impl App {
    /// Every leaked secret in this App's logs, database, Discord REST bodies,
    /// CLI stderr and recorded response bodies; each finding is masked.
    pub fn secret_findings(&self) -> Vec<String> {
        let mut places: Vec<(String, String)> = Vec::new();
        for (i, line) in self.logs().into_iter().enumerate() {
            places.push((format!("log line {i}"), line));
        }
        for (column, cell) in db_cells(&self.db_url) {
            places.push((format!("database {column}"), cell));
        }
        for call in self.double.calls() {
            let Some(body) = &call.body else { continue };
            let body = body.to_string();
            if is_one_time_secret_reply(call.route.as_deref().unwrap_or(&call.path), &body) {
                continue;
            }
            places.push((format!("Discord REST body of {} {}", call.method, call.path), body));
        }
        for (i, body) in self.bodies.lock().unwrap().iter().enumerate() {
            places.push((format!("response body or CLI stderr {i}"), body.clone()));
        }
        find_secrets(&places)
    }
}

/// True for the one legitimate home of a full key: the reply to `/apikey
/// create` or `rotate` (interaction callback or webhook message) that shows
/// the secret with its "shown only once" warning.
pub fn is_one_time_secret_reply(route: &str, body: &str) -> bool {
    (route.starts_with("/interactions/") || route.starts_with("/webhooks/"))
        && body.contains("It is shown only once")
        && (body.contains("API key created") || body.contains("API key rotated"))
}

/// Scans `(place, text)` pairs for a full API key (any prefix) or the bot
/// token; returns one masked line per leak.
pub fn find_secrets(places: &[(String, String)]) -> Vec<String> {
    let any_key = regex::Regex::new(r"[a-z0-9]+_(live|test)_[0-9A-Za-z]{38}").unwrap();
    let bot_secret = BOT_TOKEN.rsplit('.').next().unwrap_or(BOT_TOKEN);
    let mut findings = Vec::new();
    for (place, text) in places {
        for m in any_key.find_iter(text) {
            findings.push(format!("{place}: a full API key {}…", &m.as_str()[..m.as_str().len().min(12)]));
        }
        if text.contains(BOT_TOKEN) || text.contains(bot_secret) {
            findings.push(format!("{place}: the bot token"));
        }
    }
    findings
}
