//! Broken databases.

use crate::helpers::*;

#[test]
fn a_corrupt_database_file_exits_1_with_one_line_and_is_left_alone() {
    // Arrange
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&sandbox.db, &garbage).unwrap();

    for args in [
        &["migrate"][..],
        &["keys", "list", "--guild", GUILD],
        &["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.read"],
        &["keys", "revoke", "key_0000000000000000"],
    ] {
        // Act
        let out = sandbox.run(args);

        // Assert
        assert_eq!(out.code, Some(1), "{args:?}\n{}", out.describe());
        let line = out.one_stderr_line();
        assert!(line.contains("not a database"), "{args:?}: say why\n{}", out.describe());
        assert!(line.contains("DATABASE_URL"), "{args:?}: say what to do\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{args:?}\n{}", out.describe());
        assert_eq!(std::fs::read(&sandbox.db).unwrap(), garbage, "{args:?}: the file was modified");
    }
}

#[test]
fn an_unusable_database_path_exits_1_with_one_line() {
    // Tests run as root, so permissions cannot block them: use a path whose
    // "directory" is a regular file instead.
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let urls = [
        format!("sqlite://{}/gk.db?mode=rwc", file.display()),
        format!("sqlite://{}/missing-dir/gk.db?mode=rwc", file.display()),
        "sqlite:///proc/version/gk.db?mode=rwc".to_owned(),
    ];
    for url in &urls {
        for args in [
            &["migrate"][..],
            &["keys", "list", "--guild", GUILD],
            &["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.read"],
        ] {
            // Act
            let out = sandbox.run_with(args, |c| {
                c.env("DATABASE_URL", url);
            });

            // Assert
            assert_eq!(out.code, Some(1), "{url} {args:?}\n{}", out.describe());
            let line = out.one_stderr_line();
            assert!(line.contains("DATABASE_URL"), "{url} {args:?}: say what to do\n{}", out.describe());
            assert!(out.stdout.is_empty(), "{url} {args:?}\n{}", out.describe());
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}
