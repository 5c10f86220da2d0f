//! Property tests of every parser that takes outside input: tokens,
//! durations, scope lists, CIDR lists, key names and the config loader never
//! panic, and accept exactly what they should.

use guildkey::config::Config;
use guildkey::keys::token::{self, BASE62};
use guildkey::keys::{AllowedIps, Environment, KeyName, Scopes, Ttl};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_parse_never_panics(s in "\\PC{0,80}") {
        let _ = token::parse("gk", &s);
    }

    #[test]
    fn every_single_character_change_to_a_token_is_rejected(pos in 8usize..46, pick in 0usize..62, test_env in any::<bool>()) {
        let env = if test_env { Environment::Test } else { Environment::Live };
        let key = token::generate("gk", env);
        let original = key.expose();
        let replacement = BASE62[pick] as char;
        prop_assume!(original.as_bytes()[pos] as char != replacement);
        let mut mutated = original.to_owned();
        mutated.replace_range(pos..pos + 1, &replacement.to_string());
        prop_assert!(token::parse("gk", &mutated).is_err(), "{mutated} was accepted");
        prop_assert_eq!(token::parse("gk", original), Ok(env));
    }

    #[test]
    fn truncated_tokens_are_rejected(len in 0usize..46) {
        let key = token::generate("gk", Environment::Live);
        prop_assert!(token::parse("gk", &key.expose()[..len]).is_err());
    }

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
    fn scope_and_cidr_and_name_parsers_never_panic(s in "\\PC{0,120}") {
        let _ = Scopes::parse(&s);
        let _ = AllowedIps::parse(&s);
        let _ = KeyName::parse(&s);
    }

    #[test]
    fn any_ipv4_cidr_with_a_valid_prefix_parses_and_contains_its_network(a in any::<[u8; 4]>(), len in 0u8..=32) {
        let ips = AllowedIps::parse(&format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3])).unwrap();
        prop_assert!(ips.allows(std::net::IpAddr::from(a)));
    }

    #[test]
    fn the_config_loader_never_panics_and_errors_are_one_line(text in "\\PC{0,200}") {
        if let Err(e) = Config::from_parts(Some(&text), &|_| None) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
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
}
