//! Secret hygiene.

use crate::helpers::*;
use std::path::PathBuf;

#[test]
fn secrets_never_reach_logs_or_the_database() {
    for format in ["pretty", "json"] {
        // Arrange
        let sandbox = Sandbox::new();
        let traced = |args: &[&str]| {
            let out = sandbox.run_with(args, |c| {
                c.env("RUST_LOG", "trace").env("GUILDKEY_LOG_FORMAT", format);
            });
            out.assert_ok();
            out
        };

        // Act
        let created = traced(&["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.write"]);
        let first = created.secret();
        let rotated = traced(&["keys", "rotate", &first[..12], "--grace", "1h"]);
        let second = rotated.secret();
        let listed = traced(&["keys", "list", "--guild", GUILD, "--json"]);

        // Assert
        assert!(created.stderr.lines().count() > 3, "{format}: RUST_LOG=trace should log\n{}", created.describe());
        for secret in [&first, &second] {
            for out in [&created, &rotated, &listed] {
                assert!(!out.stderr.contains(secret.as_str()), "{format}: secret in stderr\n{}", out.describe());
                assert!(
                    !out.stderr.contains(random_part(secret)),
                    "{format}: secret's random part in stderr\n{}",
                    out.describe()
                );
            }
            assert!(!listed.stdout.contains(random_part(secret)), "{format}: list shows a secret");
            for (column, cell) in sandbox.all_cells() {
                assert!(!contains(&cell, secret), "{format}: secret stored in {column}");
                assert!(!contains(&cell, random_part(secret)), "{format}: secret's random part stored in {column}");
            }
        }
        let id = sandbox.key_id(GUILD, &second);
        let (hash, previous, _) = sandbox.hashes(&id);
        assert_eq!(hash, sha256(&second), "{format}: only the hash is stored");
        assert_eq!(previous, Some(sha256(&first)), "{format}: only the hash is stored");
        for suffix in ["", "-wal"] {
            let path = PathBuf::from(format!("{}{suffix}", sandbox.db.display()));
            if let Ok(bytes) = std::fs::read(&path) {
                for secret in [&first, &second] {
                    assert!(!contains(&bytes, random_part(secret)), "{format}: secret in {}", path.display());
                }
            }
        }
    }
}
