//! The config loader, `Config::from_parts` (the file's text plus an
//! environment lookup; no files, no process environment), never panics:
//! an error is one line, `KEY: message`, naming a key; an accepted config
//! never shows its bot token, and written back as a file it loads to the
//! same settings.
//!
//! Input: the TOML text, then NUL-separated `NAME=value` environment
//! entries (the first one for a name wins).

#![no_main]

use guildkey::config::{Config, LogFormat, RegisterCommands, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let mut parts = input.split('\0');
    let text = parts.next().filter(|t| !t.is_empty());
    let env: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
    match Config::from_parts(text, &lookup) {
        Err(e) => {
            let shown = e.to_string();
            assert!(!e.key.trim().is_empty(), "the error names no key: {shown:?}");
            assert!(shown.starts_with(&format!("{}: ", e.key)), "{shown:?}");
            assert!(!shown.contains(['\n', '\r']), "not one line: {shown:?}");
        }
        Ok(cfg) => {
            if let Some(token) = &cfg.discord.token {
                let token = token.expose();
                assert!(!token.is_empty() && !token.contains(char::is_whitespace));
                // What is shown does not depend on the token (its text may
                // also be in another setting, so search for it proves nothing).
                let shown = |c: &Config| format!("{} {c:?}", c.describe());
                let mut other = cfg.clone();
                other.discord.token = Some(Secret::new(format!("{token}x")));
                assert_eq!(shown(&cfg), shown(&other), "the bot token is shown");
            }
            let again = Config::from_parts(Some(&as_file(&cfg)), &|_| None)
                .unwrap_or_else(|e| panic!("an accepted config written back is refused: {e}"));
            assert_eq!(again.describe(), cfg.describe(), "written back, the config loads differently");
            assert_eq!(again.database.url, cfg.database.url);
            assert_eq!(
                again.discord.token.as_ref().map(|t| t.expose()),
                cfg.discord.token.as_ref().map(|t| t.expose())
            );
        }
    }
});

/// The accepted settings as a config file, every key written out.
fn as_file(cfg: &Config) -> String {
    let s = |v: &str| toml::Value::String(v.to_owned()).to_string();
    let register = match cfg.discord.register_commands {
        RegisterCommands::Global => "global".to_owned(),
        RegisterCommands::Guild(id) => format!("guild:{id}"),
        RegisterCommands::None => "none".to_owned(),
    };
    let format = match cfg.log.format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    };
    let token = cfg.discord.token.as_ref().map(|t| format!("token = {}\n", s(t.expose()))).unwrap_or_default();
    format!(
        "[discord]\n{token}api_base_url = {}\nregister_commands = {}\n\
         [database]\nurl = {}\n\
         [http]\nbind = {}\ntrust_forwarded_for = {}\nmax_body_bytes = {}\n\
         [keys]\nmax_per_guild = {}\nprefix = {}\ndefault_rate_limit_per_minute = {}\nlast_used_flush_seconds = {}\n\
         [log]\nformat = {}\n",
        s(&cfg.discord.api_base_url),
        s(&register),
        s(&cfg.database.url),
        s(&cfg.http.bind.to_string()),
        cfg.http.trust_forwarded_for,
        cfg.http.max_body_bytes,
        cfg.keys.max_per_guild,
        s(&cfg.keys.prefix),
        cfg.keys.default_rate_limit_per_minute,
        cfg.keys.last_used_flush_seconds,
        s(format),
    )
}
