//! `keys::AllowedIps::parse` never panics; what it accepts round-trips
//! through its storage form, each entry is a CIDR with no host bits, the list
//! has no duplicates and at most `MAX_ENTRIES`, and every entry allows its
//! own network address. Errors name the field and quote a bounded amount.

#![no_main]

use std::collections::HashSet;
use std::net::IpAddr;

use guildkey::keys::AllowedIps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match AllowedIps::parse(s) {
        Ok(ips) => {
            let stored = ips.to_storage();
            assert_eq!(
                AllowedIps::parse(&stored).as_ref(),
                Ok(&ips),
                "the storage form {stored:?} does not parse back"
            );
            let entries = ips.entries();
            assert!(entries.len() <= AllowedIps::MAX_ENTRIES);
            assert_eq!(entries.iter().collect::<HashSet<_>>().len(), entries.len(), "duplicates in {entries:?}");
            assert_eq!(ips.is_empty(), entries.is_empty());
            for entry in &entries {
                let net: ipnet::IpNet = entry.parse().expect("an entry is a CIDR");
                assert_eq!(net, net.trunc(), "{entry} keeps host bits");
                let one = AllowedIps::parse(entry).expect("an entry parses alone");
                assert!(one.allows(net.network()), "{entry} does not allow its own network address");
                assert!(ips.allows(net.network()), "{stored} does not allow {}", net.network());
            }
            if ips.is_empty() {
                assert!(ips.allows(IpAddr::from([203, 0, 113, 7])), "an empty list allows everyone");
            }
        }
        Err(e) => {
            assert_eq!(e.field, "allowed_ips");
            assert!(e.message.chars().count() < 200, "the error quotes too much: {} chars", e.message.chars().count());
        }
    }
});
