//! `keys::Scopes::parse` never panics and accepts exactly a non-empty list
//! of known scope names (any ASCII case, no repeats) split by commas, spaces,
//! tabs or line breaks; what it accepts re-parses from `names()`, the
//! storage form and `Display` to the same set.

#![no_main]

use guildkey::keys::{Scope, Scopes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let words: Vec<String> =
        s.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase).collect();
    let known = |w: &String| Scope::ALL.iter().any(|scope| scope.as_str() == w);
    let mut unique = words.clone();
    unique.sort();
    unique.dedup();
    let acceptable = !words.is_empty() && words.iter().all(known) && unique.len() == words.len();
    match Scopes::parse(s) {
        Ok(scopes) => {
            assert!(acceptable, "{s:?} was accepted");
            assert_eq!(scopes.names().len(), words.len());
            for word in &words {
                assert!(scopes.names().contains(&word.as_str()), "{word} is missing from {:?}", scopes.names());
            }
            for form in [scopes.names().join(" "), scopes.names().join(","), scopes.to_storage(), scopes.to_string()] {
                assert_eq!(Scopes::parse(&form), Ok(scopes), "{form:?} does not parse back");
            }
        }
        Err(e) => {
            assert!(!acceptable, "{s:?} was refused: {e}");
            assert_eq!(e.field, "scopes");
            assert!(e.message.chars().count() < 300, "the error quotes too much: {} chars", e.message.chars().count());
        }
    }
});
