//! The kinds of setting: how each is read from the file (a TOML value) or
//! an environment variable (text), validated, and shown by `config check`.
//!
//! A refusal here is the message alone; the caller names the key (the
//! file's `section.key`, or `VARIABLE (section.key)`). [`Checked`] is the
//! newtype serde reads a setting into: it validates while deserializing.

use std::fmt::Display;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::Error as _;
use toml::Value;

use super::{one_line, LogFormat, ProcessRole, RegisterCommands, Secret, Shards, MAX_SHARDS};

/// One kind of setting.
pub(super) trait Kind {
    /// What the program uses.
    type Out;
    /// From the file; the message if the value is refused.
    fn from_toml(v: Value) -> Result<Self::Out, String>;
    /// From an environment variable: its text, as a string in the file.
    fn from_env(v: &str) -> Result<Self::Out, String> {
        Self::from_toml(Value::String(v.to_owned()))
    }
    /// As `config check` shows it (secrets masked).
    fn show(v: &Self::Out) -> String;
}

/// A setting of kind `K`, validated as serde reads it.
pub(super) struct Checked<K: Kind>(pub K::Out);

impl<'de, K: Kind> serde::Deserialize<'de> for Checked<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::from_toml(Value::deserialize(d)?).map(Checked).map_err(D::Error::custom)
    }
}

fn wrong(want: &str, got: &Value) -> String {
    format!("must be {want}, not a {}", got.type_str())
}

fn string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(wrong("a string", &other)),
    }
}

/// A string, or a whole number read as its text (`shards = 4` or `"auto"`).
fn string_or_integer(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Integer(n) => Ok(n.to_string()),
        other => Err(wrong("a string or a whole number", &other)),
    }
}

/// An array of strings, or one string (each may hold a comma-separated list).
fn string_list(v: Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(wrong("an array of strings", &other)),
            })
            .collect(),
        other => Err(wrong("a string or an array of strings", &other)),
    }
}

/// A whole number from `MIN` to `MAX`.
pub(super) struct Int<T, const MIN: i64, const MAX: i64>(PhantomData<T>);

impl<T: TryFrom<i64> + Display, const MIN: i64, const MAX: i64> Kind for Int<T, MIN, MAX> {
    type Out = T;
    fn from_toml(v: Value) -> Result<T, String> {
        match v {
            Value::Integer(n) if (MIN..=MAX).contains(&n) => {
                T::try_from(n).map_err(|_| format!("{n} is out of range; use {MIN} to {MAX}"))
            }
            Value::Integer(n) => Err(format!("{n} is out of range; use {MIN} to {MAX}")),
            other => Err(wrong("a whole number", &other)),
        }
    }
    fn show(v: &T) -> String {
        v.to_string()
    }
}

/// `true` or `false`.
pub(super) struct Flag;

impl Kind for Flag {
    type Out = bool;
    fn from_toml(v: Value) -> Result<bool, String> {
        match v {
            Value::Boolean(b) => Ok(b),
            other => Err(wrong("true or false", &other)),
        }
    }
    /// `true`/`false` in any case, `1`/`0`, `yes`/`no`, `on`/`off`.
    fn from_env(v: &str) -> Result<bool, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("must be true or false, not '{}'", one_line(v))),
        }
    }
    fn show(v: &bool) -> String {
        v.to_string()
    }
}

/// The bot token: a [`Secret`], never shown.
pub(super) struct Token;

impl Kind for Token {
    type Out = Option<Secret>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        string(v).map(|s| Some(Secret::new(s)))
    }
    fn show(v: &Self::Out) -> String {
        match v {
            Some(t) => t.to_string(),
            None => "(not set; required for `guildkey run`)".to_owned(),
        }
    }
}

/// An http(s) URL, without a trailing `/`.
pub(super) struct BaseUrl;

impl Kind for BaseUrl {
    type Out = String;
    fn from_toml(v: Value) -> Result<String, String> {
        let v = string(v)?;
        let v = v.trim().trim_end_matches('/');
        let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(v.to_owned()),
            _ => Err(format!("'{v}' is not an http(s) URL like https://discord.com")),
        }
    }
    fn show(v: &String) -> String {
        v.clone()
    }
}

/// A 32-byte key in base64 (`openssl rand -base64 32`), kept as a
/// [`Secret`]: what third-party credentials are sealed under.
pub(super) struct SealKey;

impl Kind for SealKey {
    type Out = Option<Secret>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        use base64::Engine;
        let v = string(v)?;
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(v).ok())
            .ok_or("not base64; make a key with: openssl rand -base64 32")?;
        if bytes.len() != 32 {
            return Err(format!("{} bytes; it must be 32 (make one with: openssl rand -base64 32)", bytes.len()));
        }
        Ok(Some(Secret::new(v.to_owned())))
    }
    fn show(v: &Self::Out) -> String {
        match v {
            Some(t) => t.to_string(),
            None => "(not set)".to_owned(),
        }
    }
}

/// An outside service's base URL: `https://`, or `http://` only to a
/// loopback address (a test double, a local relay), never plain HTTP over
/// a network.
pub(super) struct ServiceUrl;

impl Kind for ServiceUrl {
    type Out = String;
    fn from_toml(v: Value) -> Result<String, String> {
        let v = string(v)?;
        let v = v.trim().trim_end_matches('/');
        let bad =
            || format!("'{}' is not an https:// URL (http:// is accepted only for a loopback address)", one_line(v));
        if let Some(rest) = v.strip_prefix("https://") {
            return if !rest.is_empty() && !rest.contains(char::is_whitespace) { Ok(v.to_owned()) } else { Err(bad()) };
        }
        let rest = v.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback && !rest.contains(char::is_whitespace) {
            Ok(v.to_owned())
        } else {
            Err(bad())
        }
    }
    fn show(v: &String) -> String {
        v.clone()
    }
}

/// `global`, `none` or `guild:<id>`.
pub(super) struct Register;

impl Kind for Register {
    type Out = RegisterCommands;
    fn from_toml(v: Value) -> Result<RegisterCommands, String> {
        match string(v)?.trim() {
            "global" => Ok(RegisterCommands::Global),
            "none" => Ok(RegisterCommands::None),
            other => other
                .strip_prefix("guild:")
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|&id| id > 0)
                .map(RegisterCommands::Guild)
                .ok_or_else(|| format!("'{other}' is not global, none or guild:<guild id>")),
        }
    }
    fn show(v: &RegisterCommands) -> String {
        match v {
            RegisterCommands::Global => "global".to_owned(),
            RegisterCommands::Guild(id) => format!("guild:{id}"),
            RegisterCommands::None => "none".to_owned(),
        }
    }
}

/// `auto` or a shard count.
pub(super) struct ShardCount;

impl Kind for ShardCount {
    type Out = Shards;
    fn from_toml(v: Value) -> Result<Shards, String> {
        let v = string_or_integer(v)?;
        let v = v.trim();
        if v.eq_ignore_ascii_case("auto") {
            return Ok(Shards::Auto);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_SHARDS).contains(n))
            .map(Shards::Count)
            .ok_or_else(|| format!("'{v}' is not auto or a shard count from 1 to {MAX_SHARDS}"))
    }
    fn show(v: &Shards) -> String {
        match v {
            Shards::Auto => "auto".to_owned(),
            Shards::Count(n) => n.to_string(),
        }
    }
}

/// `N` or `FIRST-LAST` (inclusive), shard ids counted from 0.
pub(super) struct ShardIds;

impl Kind for ShardIds {
    type Out = Option<(u32, u32)>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        let v = string_or_integer(v)?;
        let v = v.trim();
        let id = |s: &str| s.trim().parse::<u32>().ok().filter(|&n| n < MAX_SHARDS);
        let range = match v.split_once('-') {
            Some((a, b)) => id(a).zip(id(b)),
            None => id(v).map(|n| (n, n)),
        };
        match range {
            Some((first, last)) if first <= last => Ok(Some((first, last))),
            _ => Err(format!("'{v}' is not a shard id or range like 0-1 (first to last, from 0)")),
        }
    }
    fn show(v: &Self::Out) -> String {
        v.map_or_else(|| "all".to_owned(), |(a, b)| format!("{a}-{b}"))
    }
}

/// A SQLite or PostgreSQL URL the store accepts; shown with its password masked.
pub(super) struct DbUrl;

impl Kind for DbUrl {
    type Out = String;
    fn from_toml(v: Value) -> Result<String, String> {
        let v = string(v)?;
        let v = v.trim();
        crate::store::check_url(v).map_err(|why| one_line(&why))?;
        Ok(v.to_owned())
    }
    fn show(v: &String) -> String {
        crate::store::mask_url_password(v)
    }
}

/// A PostgreSQL `sslmode` (libpq's words): unset leaves the URL's own (or
/// `prefer`, encrypted whenever the server offers TLS).
pub(super) struct SslMode;

/// The modes PostgreSQL connections take, weakest first.
const SSL_MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

impl Kind for SslMode {
    type Out = Option<String>;
    fn from_toml(v: Value) -> Result<Option<String>, String> {
        let v = string(v)?;
        let v = v.trim().to_ascii_lowercase();
        if v.is_empty() {
            return Ok(None);
        }
        if !SSL_MODES.contains(&v.as_str()) {
            return Err(format!("'{v}' is not an sslmode; use one of {}", SSL_MODES.join(", ")));
        }
        Ok(Some(v))
    }
    fn show(v: &Option<String>) -> String {
        v.clone().unwrap_or_else(|| "(the URL's, or prefer)".to_owned())
    }
}

/// A file that must exist when set (a CA certificate in PEM).
pub(super) struct PemFile;

impl Kind for PemFile {
    type Out = Option<String>;
    fn from_toml(v: Value) -> Result<Option<String>, String> {
        let v = string(v)?;
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        match std::fs::read_to_string(v) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(Some(v.to_owned())),
            Ok(_) => Err(format!("'{v}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)")),
            Err(e) => Err(format!("cannot read '{v}': {e}")),
        }
    }
    fn show(v: &Option<String>) -> String {
        v.clone().unwrap_or_else(|| "(the URL's sslrootcert, or the public web roots)".to_owned())
    }
}

/// An address like `127.0.0.1:8080` or `[::]:8080`, or a host name and port
/// (`localhost:8080`), resolved now to its first address.
pub(super) struct Bind;

impl Kind for Bind {
    type Out = SocketAddr;
    fn from_toml(v: Value) -> Result<SocketAddr, String> {
        use std::net::ToSocketAddrs;
        let v = string(v)?;
        let v = v.trim();
        let bad = || format!("'{v}' is not an address like 127.0.0.1:8080");
        if let Ok(addr) = v.parse() {
            return Ok(addr);
        }
        // Only `host:port` is worth resolving; anything else is refused as is.
        let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let mut addrs = v.to_socket_addrs().map_err(|e| format!("'{v}': {e}"))?;
        addrs.next().ok_or_else(bad)
    }
    fn show(v: &SocketAddr) -> String {
        v.to_string()
    }
}

/// An address like [`Bind`]'s, or `""` for none.
pub(super) struct OptAddr;

impl Kind for OptAddr {
    type Out = Option<SocketAddr>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        match &v {
            Value::String(s) if s.trim().is_empty() => Ok(None),
            _ => Bind::from_toml(v).map(Some),
        }
    }
    fn show(v: &Self::Out) -> String {
        v.map_or_else(|| "(not set)".to_owned(), |a| a.to_string())
    }
}

/// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (a /32 or
/// /128), in strings that may each hold a comma-separated list. Host bits are
/// cleared (`10.1.2.3/8` is `10.0.0.0/8`); repeats are dropped.
pub(super) struct Cidrs;

impl Kind for Cidrs {
    type Out = Vec<ipnet::IpNet>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        let values = string_list(v)?;
        let mut nets = Vec::new();
        for word in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|w| !w.is_empty()) {
            let net = if word.contains('/') {
                word.parse::<ipnet::IpNet>().ok().map(|n| n.trunc())
            } else {
                word.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
            };
            let net = net.ok_or_else(|| {
                let shown: String = word.chars().take(50).collect();
                format!("'{shown}' is not a CIDR range or IP address like 10.0.0.0/8 or ::1")
            })?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(nets)
    }
    fn show(v: &Self::Out) -> String {
        match &v[..] {
            [] => "(none)".to_owned(),
            nets => nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }
    }
}

/// 1-16 lowercase letters or digits, starting with a letter.
pub(super) struct KeyPrefix;

impl Kind for KeyPrefix {
    type Out = String;
    fn from_toml(v: Value) -> Result<String, String> {
        let v = string(v)?;
        let ok = (1..=16).contains(&v.len())
            && v.starts_with(|c: char| c.is_ascii_lowercase())
            && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(v)
        } else {
            Err(format!("'{v}' must be 1-16 lowercase letters or digits, starting with a letter"))
        }
    }
    fn show(v: &String) -> String {
        v.clone()
    }
}

/// `pretty` or `json`.
pub(super) struct Format;

impl Kind for Format {
    type Out = LogFormat;
    fn from_toml(v: Value) -> Result<LogFormat, String> {
        match string(v)?.trim() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}' is not pretty or json")),
        }
    }
    fn show(v: &LogFormat) -> String {
        match v {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
        .to_owned()
    }
}

/// `http`, `bot` or `both`.
pub(super) struct Role;

impl Kind for Role {
    type Out = ProcessRole;
    fn from_toml(v: Value) -> Result<ProcessRole, String> {
        string(v)?.parse()
    }
    fn show(v: &ProcessRole) -> String {
        v.as_str().to_owned()
    }
}

/// The longest wait before one retry, and before the last: a message is
/// given up at most this long after its first attempt.
const MAX_RETRY_SPAN: Duration = Duration::from_secs(24 * 3600);

/// Waits like `["5s", "1m", "2h"]` (or one comma-separated string): a whole
/// number and `ms`, `s`, `m` or `h`, 1 to 20 of them, at most 24 h in all.
pub(super) struct RetryDelays;

impl Kind for RetryDelays {
    type Out = Vec<Duration>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        let values = string_list(v)?;
        let mut delays = Vec::new();
        for word in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|w| !w.is_empty()) {
            let shown: String = word.chars().take(20).collect();
            let bad = || format!("'{shown}' is not a wait like 500ms, 5s, 1m or 2h");
            let split = word.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u64 = word[..split].parse().map_err(|_| bad())?;
            let millis = match &word[split..] {
                "ms" => Some(n),
                "s" => n.checked_mul(1000),
                "m" => n.checked_mul(60_000),
                "h" => n.checked_mul(3_600_000),
                _ => return Err(bad()),
            };
            let delay = millis.filter(|&ms| ms > 0).map(Duration::from_millis).ok_or_else(bad)?;
            delays.push(delay);
        }
        if delays.is_empty() || delays.len() > 20 {
            return Err("give 1 to 20 waits, like [\"5s\", \"1m\", \"5m\"]".to_owned());
        }
        if delays.iter().sum::<Duration>() > MAX_RETRY_SPAN {
            return Err("the waits add up to more than 24h".to_owned());
        }
        Ok(delays)
    }
    /// Each wait in its largest whole unit.
    fn show(v: &Self::Out) -> String {
        v.iter().map(|d| show_delay(*d)).collect::<Vec<_>>().join(", ")
    }
}

fn show_delay(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A file path, or nothing (`""` in the environment unsets it).
pub(super) struct OptPath;

impl Kind for OptPath {
    type Out = Option<std::path::PathBuf>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        let v = string(v)?;
        let v = v.trim();
        if v.contains('\0') {
            return Err("a path cannot hold a NUL character".to_owned());
        }
        Ok((!v.is_empty()).then(|| std::path::PathBuf::from(v)))
    }
    fn show(v: &Self::Out) -> String {
        v.as_ref().map_or_else(|| "(not set)".to_owned(), |p| p.display().to_string())
    }
}

/// An http(s) URL, or `""` for none (turns what it feeds off).
pub(super) struct OptUrl;

impl Kind for OptUrl {
    type Out = Option<String>;
    fn from_toml(v: Value) -> Result<Self::Out, String> {
        let v = string(v)?;
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(Some(v.to_owned())),
            _ => Err(format!("'{}' is not an http(s) URL (or \"\" for none)", one_line(v))),
        }
    }
    fn show(v: &Self::Out) -> String {
        v.clone().unwrap_or_else(|| "(none)".to_owned())
    }
}
