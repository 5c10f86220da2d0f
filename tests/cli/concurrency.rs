//! Concurrency.

use crate::helpers::*;
use std::process::{Child, Stdio};
use std::time::Duration;

#[test]
fn concurrent_creates_from_32_processes_never_exceed_the_limit() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let children: Vec<(String, Child)> = (0..32)
        .map(|i| {
            let name = format!("racer {i}");
            let child = sandbox
                .command(&["keys", "create", "--guild", GUILD, "--name", &name, "--scopes", "bans.read"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start guildkey");
            (name, child)
        })
        .collect();

    // Act
    let outcomes: Vec<Outcome> = children
        .into_iter()
        .map(|(name, child)| Outcome::from_output(&[name.as_str()], wait_with_limit(child, Duration::from_secs(120))))
        .collect();

    // Assert
    let (won, lost): (Vec<&Outcome>, Vec<&Outcome>) = outcomes.iter().partition(|o| o.code == Some(0));
    assert_eq!(won.len(), 3, "exactly the limit succeeds: {outcomes:#?}");
    assert_eq!(lost.len(), 29, "{outcomes:#?}");
    for out in &lost {
        out.assert_code(1);
        assert!(out.stderr.contains(LIMIT_MESSAGE), "a loser should hear about the limit\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
    let winners: Vec<String> = won.iter().map(|o| o.secret()).collect();
    let keys = sandbox.list(GUILD);
    assert_eq!(keys.len(), 3, "{keys:#?}");
    assert!(keys.iter().all(|k| k["status"] == "active"), "{keys:#?}");
    for secret in &winners {
        sandbox.listed(GUILD, secret);
    }
    let created = sandbox.audit().into_iter().filter(|(action, _, _)| action == "key.created").count();
    assert_eq!(created, 3, "one key.created event per key, none for refused creates");
}

#[test]
fn concurrent_creates_on_a_database_never_migrated_each_succeed_or_hit_the_limit() {
    // No `migrate` first, as when two instances (or the CLI and a starting
    // listener) open a fresh database at the same moment. The race is timing
    // dependent, so try several fresh databases.
    for round in 0..5 {
        // Arrange
        let sandbox = Sandbox::new();
        let children: Vec<(String, Child)> = (0..32)
            .map(|i| {
                let name = format!("racer {i}");
                let child = sandbox
                    .command(&["keys", "create", "--guild", GUILD, "--name", &name, "--scopes", "bans.read"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start guildkey");
                (name, child)
            })
            .collect();

        // Act
        let outcomes: Vec<Outcome> = children
            .into_iter()
            .map(|(name, child)| {
                Outcome::from_output(&[name.as_str()], wait_with_limit(child, Duration::from_secs(120)))
            })
            .collect();

        // Assert
        for out in &outcomes {
            let ok = out.code == Some(0) || (out.code == Some(1) && out.stderr.contains(LIMIT_MESSAGE));
            assert!(ok, "round {round}: each create either succeeds or hits the limit\n{}", out.describe());
        }
        assert_eq!(outcomes.iter().filter(|o| o.code == Some(0)).count(), 3, "round {round}");
    }
}
