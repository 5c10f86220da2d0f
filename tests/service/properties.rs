//! Property tests of every parser that takes outside input: tokens,
//! durations, scope lists, CIDR lists, key names, scope autocomplete and the
//! config loader never panic, and accept exactly what they should.
//!
//! These double as the project's fuzz targets (the toolchain is stable, so
//! there is no libFuzzer): `PROPTEST_CASES=N` sets the number of inputs per
//! property (default [`DEFAULT_CASES`], kept small so CI stays fast), and
//! `scripts/fuzz.sh` runs each target for a case count or a time budget.
//! A failing input is shrunk and saved in `proptest-regressions/properties.txt`
//! (committed, replayed first on every run); each one found so far is also a
//! named test at the end of this file.

use std::net::IpAddr;

use guildkey::bot::apikey::scope_choices;
use guildkey::config::Config;
use guildkey::keys::token::{self, BASE62};
use guildkey::keys::{AllowedIps, Environment, KeyName, Scope, Scopes, Ttl};
use guildkey::service::parse_grace;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Inputs per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 512;

fn cases() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    // Long fuzz runs must not fail on the few inputs a property skips.
    config.max_global_rejects = config.cases.max(1024);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/properties.txt")));
    config
}

/// A token shown in a failure message: enough to recognise, never whole.
fn masked(token: &str) -> String {
    format!("{}… ({} chars)", token.chars().take(12).collect::<String>(), token.chars().count())
}

/// Arbitrary text, including control characters, line breaks and
/// multi-byte characters, as a person or a script could send it.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::string::string_regex(&format!("(\\PC|\\pC|\n|\t|\r){{0,{max}}}")).unwrap(),
        any::<String>(),
    ]
}

/// Text near a token: the right prefix and environment, then arbitrary
/// characters, mostly base62.
fn token_like() -> impl Strategy<Value = String> {
    ("(gk|gk_|xx|g)", "(_live_|_test_|_prod_|_|__|_Live_)", "[0-9A-Za-z]{0,45}", "(\\PC|\\pC){0,3}", 0usize..45)
        .prop_map(|(p, e, tail, junk, at)| {
            let mut tail = tail;
            let at = at.min(tail.len());
            tail.insert_str(at, &junk);
            format!("{p}{e}{tail}")
        })
}

fn a_prefix() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,15}"
}

fn an_env() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

/// The names of SPEC §2, by section, plus a few that are not.
fn config_key() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just(("discord", "token")),
        Just(("discord", "api_base_url")),
        Just(("discord", "register_commands")),
        Just(("database", "url")),
        Just(("http", "bind")),
        Just(("http", "trust_forwarded_for")),
        Just(("http", "max_body_bytes")),
        Just(("keys", "max_per_guild")),
        Just(("keys", "prefix")),
        Just(("keys", "default_rate_limit_per_minute")),
        Just(("keys", "last_used_flush_seconds")),
        Just(("log", "format")),
        Just(("log", "level")),
        Just(("run", "only")),
        Just(("htp", "bind")),
    ]
    .prop_map(|(s, k)| (s.to_owned(), k.to_owned()))
}

/// A TOML value of any type, including strings with escapes that become
/// control characters once parsed.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..70_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        "\"[a-z0-9:/.?=_ \\\\nrt\"-]{0,30}\"",
        Just("[1, \"a\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("\"sqlite://x.db?mode=rwc\"".to_owned()),
        Just("\"guild:\\n1\"".to_owned()),
        Just("\"127.0.0.1:0\"".to_owned()),
    ]
}

/// A TOML document built from known and unknown keys with values of any
/// type, sometimes cut short or with raw junk appended.
fn toml_document() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((config_key(), toml_value(), any::<bool>()), 0..8),
        "(|\\PC{0,20}|\n\\[|\\[\\[x\\]\\]\n|\"\\\\u0000\" = 1\n|\"a\\\\nb\" = 1\n)",
        0usize..400,
    )
        .prop_map(|(entries, junk, cut)| {
            let mut text = String::new();
            for ((section, key), value, dotted) in entries {
                if dotted {
                    text.push_str(&format!("{section}.{key} = {value}\n"));
                } else {
                    text.push_str(&format!("[{section}]\n{key} = {value}\n"));
                }
            }
            text.push_str(&junk);
            if cut < text.len() && text.is_char_boundary(cut) {
                text.truncate(cut);
            }
            text
        })
}

const ENV_VARS: [&str; 7] = [
    "DISCORD_TOKEN",
    "DISCORD_API_BASE_URL",
    "GUILDKEY_REGISTER_COMMANDS",
    "DATABASE_URL",
    "GUILDKEY_HTTP_BIND",
    "GUILDKEY_LOG_FORMAT",
    "GUILDKEY_ONLY",
];

/// What every config error must look like: one line, `KEY: message`, the
/// key never empty.
fn check_config_error(e: &guildkey::config::ConfigError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!e.key.trim().is_empty(), "the error names no key: {shown:?}");
    prop_assert!(shown.starts_with(&format!("{}: ", e.key)), "{shown:?}");
    prop_assert!(!shown.contains(['\n', '\r']), "not one line: {shown:?}");
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    // --- tokens -------------------------------------------------------------

    #[test]
    fn token_parse_never_panics(s in any_text(120), prefix in a_prefix()) {
        let _ = token::parse("gk", &s);
        let _ = token::parse(&prefix, &s);
    }

    #[test]
    fn token_parse_never_panics_on_near_tokens_and_accepts_only_the_exact_shape(s in token_like()) {
        let shape = regex::Regex::new(r"^gk_(live|test)_[0-9A-Za-z]{38}$").unwrap();
        if token::parse("gk", &s).is_ok() {
            prop_assert!(shape.is_match(&s), "accepted {:?}", masked(&s));
            prop_assert_eq!(token::checksum(&s[..40]), &s[40..]);
        }
    }

    #[test]
    fn generated_tokens_round_trip_for_any_prefix(prefix in a_prefix(), env in an_env()) {
        let key = token::generate(&prefix, env);
        let t = key.expose();
        prop_assert_eq!(t.len(), prefix.len() + 1 + env.as_str().len() + 1 + 38);
        prop_assert_eq!(token::parse(&prefix, t), Ok(env));
        prop_assert!(t.starts_with(&key.display_prefix()));
        prop_assert!(!format!("{key:?}").contains(&t[t.len() - 38..]), "Debug shows the secret");
        // Another deployment's prefix never accepts it.
        let other = format!("{prefix}x");
        prop_assert!(token::parse(&other, t).is_err());
    }

    #[test]
    fn every_single_character_change_to_a_token_is_rejected(pos in 0usize..46, replacement in any::<char>(), env in an_env()) {
        let key = token::generate("gk", env);
        let original = key.expose();
        prop_assume!(original.chars().nth(pos) != Some(replacement));
        let mut mutated: Vec<char> = original.chars().collect();
        mutated[pos] = replacement;
        let mutated: String = mutated.into_iter().collect();
        prop_assert!(token::parse("gk", &mutated).is_err(), "{} was accepted", masked(&mutated));
        prop_assert_eq!(token::parse("gk", original), Ok(env));
    }

    #[test]
    fn every_base62_substitution_in_the_random_part_or_checksum_is_rejected(pos in 8usize..46, pick in 0usize..62, test_env in any::<bool>()) {
        let env = if test_env { Environment::Test } else { Environment::Live };
        let key = token::generate("gk", env);
        let original = key.expose();
        let replacement = BASE62[pick] as char;
        prop_assume!(original.as_bytes()[pos] as char != replacement);
        let mut mutated = original.to_owned();
        mutated.replace_range(pos..pos + 1, &replacement.to_string());
        prop_assert!(token::parse("gk", &mutated).is_err(), "{} was accepted", masked(&mutated));
    }

    #[test]
    fn inserting_or_deleting_a_character_is_rejected(pos in 0usize..47, c in any::<char>(), insert in any::<bool>()) {
        let key = token::generate("gk", Environment::Live);
        let mut chars: Vec<char> = key.expose().chars().collect();
        if insert {
            chars.insert(pos.min(chars.len()), c);
        } else {
            chars.remove(pos.min(chars.len() - 1));
        }
        let mutated: String = chars.into_iter().collect();
        prop_assert!(token::parse("gk", &mutated).is_err(), "{} was accepted", masked(&mutated));
    }

    #[test]
    fn truncated_tokens_are_rejected(len in 0usize..46) {
        let key = token::generate("gk", Environment::Live);
        prop_assert!(token::parse("gk", &key.expose()[..len]).is_err());
    }

    // --- durations ----------------------------------------------------------

    #[test]
    fn durations_accept_exactly_positive_integers_with_a_unit(n in 0i64..100_000, unit in "[smhdxy ]", junk in "\\PC{0,12}") {
        let input = format!("{n}{unit}");
        let per = match unit.as_str() { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, _ => 0 };
        match Ttl::parse("expires_in", &input) {
            Ok(t) => prop_assert!(per > 0 && n > 0 && t.seconds() == n * per),
            Err(_) => prop_assert!(per == 0 || n == 0 || n * per > Ttl::MAX_SECONDS),
        }
        let _ = Ttl::parse("expires_in", &junk);
    }

    #[test]
    fn the_duration_parser_never_panics_and_accepts_only_digits_and_a_unit(s in prop_oneof![any_text(40), "[ ]?[0-9]{0,25}[smhdSM\u{3b9}é ]?[ ]?"]) {
        let shape = regex::Regex::new(r"^[0-9]+[smhd]$").unwrap();
        for result in [Ttl::parse("expires_in", &s), parse_grace(&s)] {
            match result {
                Ok(t) => {
                    prop_assert!(shape.is_match(s.trim()), "accepted {s:?}");
                    prop_assert!((1..=Ttl::MAX_SECONDS).contains(&t.seconds()), "{s:?} gave {}", t.seconds());
                    prop_assert_eq!(Ttl::parse("expires_in", &t.to_string()), Ok(t), "Display does not round-trip");
                }
                Err(e) => {
                    prop_assert!(e.field == "expires_in" || e.field == "grace");
                    prop_assert!(e.message.chars().count() < 200, "error quotes too much: {}", e.message);
                }
            }
        }
        if let Ok(g) = parse_grace(&s) {
            prop_assert!(g.seconds() <= 7 * 86_400);
        }
    }

    // --- IP allow-lists -----------------------------------------------------

    #[test]
    fn the_allow_list_parser_never_panics_and_what_it_accepts_round_trips(s in prop_oneof![any_text(120), "([0-9a-f:.]{1,20}(/[0-9]{1,3})?[, ]{1,2}){0,6}"], ip in any::<IpAddr>()) {
        match AllowedIps::parse(&s) {
            Ok(ips) => {
                let again = AllowedIps::parse(&ips.to_storage());
                prop_assert_eq!(again.as_ref(), Ok(&ips), "storage form does not parse back");
                prop_assert!(ips.entries().len() <= AllowedIps::MAX_ENTRIES);
                let _ = ips.allows(ip);
            }
            Err(e) => {
                prop_assert_eq!(e.field, "allowed_ips");
                prop_assert!(e.message.chars().count() < 200, "error quotes too much: {}", e.message);
            }
        }
    }

    #[test]
    fn any_ipv4_cidr_with_a_valid_prefix_parses_and_contains_its_network(a in any::<[u8; 4]>(), len in 0u8..=32) {
        let ips = AllowedIps::parse(&format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3])).unwrap();
        prop_assert!(ips.allows(IpAddr::from(a)));
    }

    #[test]
    fn any_ipv6_cidr_with_a_valid_prefix_parses_and_contains_its_network(a in any::<[u8; 16]>(), len in 0u8..=128, bad in 129u16..1000) {
        let addr = std::net::Ipv6Addr::from(a);
        let ips = AllowedIps::parse(&format!("{addr}/{len}")).unwrap();
        prop_assert!(ips.allows(IpAddr::V6(addr)));
        let too_long = format!("{addr}/{bad}");
        prop_assert!(AllowedIps::parse(&too_long).is_err());
    }

    // --- scopes -------------------------------------------------------------

    #[test]
    fn the_scope_parser_never_panics_and_accepts_only_known_scopes(s in prop_oneof![any_text(120), "((guild|bans|roles|audit)\\.(read|write)[, \t]{0,2}){0,6}"]) {
        match Scopes::parse(&s) {
            Ok(scopes) => {
                let words: Vec<String> = s.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase).collect();
                prop_assert_eq!(words.len(), scopes.names().len(), "{:?}", s);
                for w in &words {
                    prop_assert!(Scope::ALL.iter().any(|sc| sc.as_str() == w), "accepted {w:?}");
                }
                let again = Scopes::parse(&scopes.to_storage());
                prop_assert_eq!(again.as_ref(), Ok(&scopes));
            }
            Err(e) => {
                prop_assert_eq!(e.field, "scopes");
                prop_assert!(e.message.chars().count() < 300, "error quotes too much: {}", e.message);
            }
        }
    }

    #[test]
    fn any_set_of_scopes_with_any_separators_round_trips(picks in proptest::sample::subsequence(Scope::ALL.to_vec(), 1..=5), seps in proptest::collection::vec("[, \t]{1,3}", 5), upper in any::<bool>()) {
        let mut text = String::new();
        for (scope, sep) in picks.iter().zip(&seps) {
            text.push_str(scope.as_str());
            text.push_str(sep);
        }
        if upper {
            text = text.to_uppercase();
        }
        let scopes = Scopes::parse(&text).unwrap();
        prop_assert_eq!(scopes.iter().collect::<Vec<_>>(), picks);
    }

    #[test]
    fn scope_autocomplete_never_panics_and_every_choice_fits_discord(partial in prop_oneof![any_text(200), "((guild|bans|roles|audit)\\.(read|write)[, ]{0,2}){0,8}[a-z.]{0,6}"]) {
        for choice in scope_choices(&partial) {
            let v = serde_json::to_value(&choice).unwrap();
            let name = v["name"].as_str().unwrap();
            let value = v["value"].as_str().unwrap();
            prop_assert!((1..=100).contains(&name.chars().count()), "choice name of {} chars", name.chars().count());
            prop_assert!((1..=100).contains(&value.chars().count()), "choice value of {} chars", value.chars().count());
            prop_assert!(Scopes::parse(value).is_ok(), "offered {value:?}, which create refuses");
        }
    }

    // --- key names ----------------------------------------------------------

    #[test]
    fn the_name_parser_never_panics_and_accepts_only_trimmed_1_to_64_characters(s in prop_oneof![any_text(100), "[ ]?\\PC{60,66}[ ]?"]) {
        match KeyName::parse(&s) {
            Ok(name) => {
                let n = name.as_str();
                prop_assert_eq!(n, s.trim());
                prop_assert!((1..=KeyName::MAX_CHARS).contains(&n.chars().count()));
                prop_assert!(!n.chars().any(char::is_control), "{n:?}");
                let again = KeyName::parse(n);
                prop_assert_eq!(again.as_ref(), Ok(&name));
            }
            Err(e) => {
                prop_assert_eq!(e.field, "name");
                prop_assert!(!e.message.contains(['\n', '\r']), "{}", e.message);
            }
        }
    }

    // --- the config loader --------------------------------------------------

    #[test]
    fn the_config_loader_never_panics_and_errors_are_one_line(text in any_text(300)) {
        if let Err(e) = Config::from_parts(Some(&text), &|_| None) {
            check_config_error(&e)?;
        }
    }

    #[test]
    fn the_config_loader_never_panics_on_toml_documents_and_names_the_key(text in toml_document()) {
        if let Err(e) = Config::from_parts(Some(&text), &|_| None) {
            check_config_error(&e)?;
        }
    }

    #[test]
    fn config_values_of_the_wrong_type_name_their_key(section in "(http|keys|log|discord|database)", value in "(1|true|\"x\"|\\[1\\]|1\\.5)") {
        let keys: &[&str] = match section.as_str() {
            "http" => &["bind", "trust_forwarded_for", "max_body_bytes"],
            "keys" => &["max_per_guild", "prefix", "default_rate_limit_per_minute", "last_used_flush_seconds"],
            "log" => &["format"],
            "discord" => &["api_base_url", "register_commands"],
            _ => &["url"],
        };
        for key in keys {
            let text = format!("[{section}]\n{key} = {value}\n");
            if let Err(e) = Config::from_parts(Some(&text), &|_| None) {
                prop_assert_eq!(e.key, format!("{section}.{key}"));
            }
        }
    }

    #[test]
    fn a_single_known_key_with_any_value_is_accepted_or_refused_naming_that_key((section, key) in config_key(), value in toml_value()) {
        let text = format!("[{section}]\n{key} = {value}\n");
        if let Err(e) = Config::from_parts(Some(&text), &|_| None) {
            check_config_error(&e)?;
            prop_assert!(e.key == format!("{section}.{key}") || e.key == section || e.key == "config file", "{text:?} gave {e}");
        }
    }

    #[test]
    fn the_bot_token_never_appears_in_debug_or_describe(token in "[A-Za-z0-9]{16,30}\\.[A-Za-z0-9_-]{6}\\.[A-Za-z0-9_-]{20,40}", from_file in any::<bool>()) {
        let text = format!("[discord]\ntoken = \"{token}\"\n");
        let env = |name: &str| (!from_file && name == "DISCORD_TOKEN").then(|| token.clone());
        let cfg = Config::from_parts(from_file.then_some(text.as_str()), &env).unwrap();
        let shown = format!("{} {:?} {:?}", cfg.describe(), cfg, cfg.discord.token);
        prop_assert!(!shown.contains(&token), "the token is shown");
        let tail = token.rsplit('.').next().unwrap();
        prop_assert!(!shown.contains(tail), "part of the token is shown");
        prop_assert_eq!(cfg.discord.token.as_ref().map(|t| t.expose()), Some(token.as_str()));
    }

    #[test]
    fn any_environment_value_is_accepted_or_refused_naming_its_variable(var in proptest::sample::select(ENV_VARS.to_vec()), value in prop_oneof![any_text(80), "[a-z0-9:/.?=_ -]{0,30}"]) {
        let env = |name: &str| (name == var).then(|| value.clone());
        match Config::from_parts(None, &env) {
            Ok(_) => {}
            Err(e) => {
                check_config_error(&e)?;
                let named = if var == "DISCORD_TOKEN" { "discord.token" } else { var };
                prop_assert!(e.key.contains(named), "{var}={value:?} gave {e}");
                if var == "DISCORD_TOKEN" {
                    prop_assert!(value.trim().chars().count() < 12 || !e.to_string().contains(value.trim()), "the error shows the token");
                }
            }
        }
    }
}

// --- shrunk inputs the properties found, kept as named regressions --------

/// Shrunk inputs the properties found, as named tests (`scripts/fuzz.sh`
/// skips this module: each runs once).
mod regressions {
    use super::*;

    #[test]
    fn autocomplete_after_an_unknown_scope_offers_only_lists_create_accepts() {
        // Found by scope_autocomplete_never_panics_and_every_choice_fits_discord.
        let values: Vec<String> = scope_choices("roles.read ")
            .iter()
            .map(|c| serde_json::to_value(c).unwrap()["value"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(values.len(), Scope::ALL.len(), "{values:?}");
        for value in &values {
            assert!(Scopes::parse(value).is_ok(), "offered {value:?}");
        }
        let after_known: Vec<String> = scope_choices("BANS.READ, ba")
            .iter()
            .map(|c| serde_json::to_value(c).unwrap()["value"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(after_known, ["bans.read, bans.write"]);
    }

    #[test]
    fn config_errors_about_values_with_line_breaks_stay_one_line() {
        // Found by a_single_known_key_with_any_value_is_accepted_or_refused_naming_that_key,
        // any_environment_value_is_accepted_or_refused_naming_its_variable and
        // the_config_loader_never_panics_on_toml_documents_and_names_the_key.
        let env_cr = |name: &str| (name == "DISCORD_API_BASE_URL").then(|| "a\r0".to_owned());
        let cases = [
            Config::from_parts(Some("[discord]\napi_base_url = \"guild:\\n1\"\n"), &|_| None),
            Config::from_parts(None, &env_cr),
            Config::from_parts(Some("[log]\nlevel = 0\n\"a\\nb\" = 1"), &|_| None),
        ];
        for result in cases {
            let e = result.unwrap_err();
            assert!(!e.to_string().contains(['\n', '\r']), "{e:?}");
            assert!(!e.key.is_empty());
        }
    }
}
