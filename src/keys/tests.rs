//! The key domain's parsers and rules, each against what it must refuse.

use super::*;

#[test]
fn a_keys_status_permits_each_change_or_says_why_not() {
    use KeyChange::*;
    use KeyStatus::{Active, Expired, Revoked, Suspended};
    use StatusConflict as C;
    let table = [
        (Revoke, Active, Ok(())),
        (Revoke, Suspended, Ok(())),
        (Revoke, Expired, Ok(())),
        (Revoke, Revoked, Err(C::Revoked)),
        (Delete, Active, Err(C::StillActive)),
        (Delete, Suspended, Err(C::StillActive)),
        (Delete, Expired, Ok(())),
        (Delete, Revoked, Ok(())),
        (Rotate, Active, Ok(())),
        (Rotate, Suspended, Ok(())),
        (Rotate, Expired, Err(C::Expired)),
        (Rotate, Revoked, Err(C::Revoked)),
        (Suspend, Active, Ok(())),
        (Suspend, Suspended, Err(C::Suspended)),
        (Suspend, Expired, Err(C::Expired)),
        (Suspend, Revoked, Err(C::Revoked)),
        (Resume, Suspended, Ok(())),
        (Resume, Active, Err(C::NotSuspended)),
        (Resume, Expired, Err(C::Expired)),
        (Resume, Revoked, Err(C::Revoked)),
    ];
    for (change, status, want) in table {
        assert_eq!(status.permits(change), want, "{change:?} a {status} key");
    }
}

#[test]
fn scopes_parse_commas_and_spaces() {
    let s = Scopes::parse("bans.read, bans.write roles.write").unwrap();
    assert_eq!(s.names(), ["bans.read", "bans.write", "roles.write"]);
    assert_eq!(s.to_storage(), "bans.read bans.write roles.write");
}

#[test]
fn scopes_reject_unknown_duplicate_and_empty() {
    for (input, needle) in [
        ("bans.read,admin", "unknown scope 'admin'"),
        ("bans.read bans.read", "listed twice"),
        ("", "at least one"),
        (" , ", "at least one"),
    ] {
        let err = Scopes::parse(input).unwrap_err();
        assert!(err.message.contains(needle), "{input:?}: {err}");
    }
}

#[test]
fn names_are_trimmed_and_bounded() {
    assert_eq!(KeyName::parse("  game server ").unwrap().as_str(), "game server");
    assert_eq!(KeyName::parse(&"é".repeat(64)).unwrap().as_str().chars().count(), 64);
    assert!(KeyName::parse("🎮 roblox").is_ok());
    for bad in ["", "   ", &"x".repeat(65), "a\nb"] {
        assert!(KeyName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn durations_parse_units_and_reject_bad_input() {
    assert_eq!(Ttl::parse("expires", "90s").unwrap().seconds(), 90);
    assert_eq!(Ttl::parse("expires", "10m").unwrap().seconds(), 600);
    assert_eq!(Ttl::parse("expires", "12h").unwrap().seconds(), 43_200);
    assert_eq!(Ttl::parse("expires", "30d").unwrap().seconds(), 2_592_000);
    for bad in ["0s", "-1d", "abc", "", "d", "1.5h", "10", "10w", "99999999999999999999d", "3651d", "1 d"] {
        assert!(Ttl::parse("expires", bad).is_err(), "{bad:?}");
    }
    assert_eq!(Ttl::from_seconds(600).to_string(), "10m");
    assert_eq!(Ttl::from_seconds(90).to_string(), "90s");
}

#[test]
fn a_long_zero_duration_is_quoted_40_characters_at_most() {
    // Found by fuzz/fuzz_targets/duration.rs: a zero of 200 digits was
    // quoted whole, unlike every other refusal.
    let err = Ttl::parse("expires", &format!("{}m", "0".repeat(200))).unwrap_err();
    assert!(err.message.contains("is zero"), "{err}");
    assert!(err.message.chars().count() < 100, "{err}");
    assert!(Ttl::parse("expires", "0s").unwrap_err().message.starts_with("'0s' is zero"));
}

#[test]
fn allowed_ips_parse_v4_v6_and_match() {
    let ips = AllowedIps::parse("203.0.113.7, 10.1.2.3/8 2001:db8::/32").unwrap();
    assert_eq!(ips.entries(), ["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]);
    assert!(ips.allows("10.200.0.1".parse().unwrap()));
    assert!(ips.allows("::ffff:10.0.0.1".parse().unwrap()));
    assert!(ips.allows("2001:db8::1".parse().unwrap()));
    assert!(!ips.allows("203.0.113.8".parse().unwrap()));
    assert!(AllowedIps::parse("").unwrap().allows("1.2.3.4".parse().unwrap()));
    for bad in ["10.0.0.0/33", "abc", "1.2.3", "10.0.0.0/8,,x", "::/129"] {
        assert!(AllowedIps::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn v4_mapped_entries_are_held_as_ipv4_and_allow_their_clients() {
    // Found by fuzz/fuzz_targets/cidr.rs: `::ffff:10.0.0.1` was kept as
    // an IPv6 /128, which `allows` (seeing mapped peers as IPv4) never matched.
    let ips = AllowedIps::parse("::ffff:10.0.0.1, ::ffff:192.168.0.0/112 ::ffff:0:0/96").unwrap();
    assert_eq!(ips.entries(), ["10.0.0.1/32", "192.168.0.0/16", "0.0.0.0/0"]);
    assert!(ips.allows("::ffff:10.0.0.1".parse().unwrap()));
    assert!(ips.allows("10.0.0.1".parse().unwrap()));
    assert_eq!(AllowedIps::parse("::ffff:10.0.0.1 10.0.0.1").unwrap().entries(), ["10.0.0.1/32"]);
    let one = AllowedIps::parse("::ffff:10.0.0.1").unwrap();
    assert!(!one.allows("10.0.0.2".parse().unwrap()));
    // Not v4-mapped, or too short a prefix to be: kept as IPv6.
    assert_eq!(AllowedIps::parse("::ffff:0:0/95 ::10.0.0.1").unwrap().entries(), ["::fffe:0:0/95", "::a00:1/128"]);
}

#[test]
fn rate_limits_are_bounded() {
    assert_eq!(parse_rate_limit(60), Ok(60));
    assert!(parse_rate_limit(0).is_err());
    assert!(parse_rate_limit(-5).is_err());
    assert!(parse_rate_limit(100_001).is_err());
}

#[test]
fn an_ipv6_address_is_counted_in_its_64_and_an_ipv4_one_alone() {
    let block = |s: &str| block_text(address_block(s.parse().unwrap()));
    assert_eq!(block("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
    assert_eq!(block("2001:db8:1:2::1"), block("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    assert_ne!(block("2001:db8:1:2::1"), block("2001:db8:1:3::1"));
    assert_eq!(block("203.0.113.7"), "203.0.113.7");
    assert_eq!(block("::ffff:203.0.113.7"), "203.0.113.7", "an IPv4-mapped address is its IPv4 one");
}
