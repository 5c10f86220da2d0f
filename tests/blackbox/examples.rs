//! The script examples in `examples/` run against the real listener (and
//! its bot on the Discord double): what the README promises integrators.

use crate::support;

use std::process::Command;
use std::time::Duration;

use support::{ids, spawn_app, App};

fn run_example(app: &App, program: &str, script: &str, key: &str) -> (bool, String) {
    run_example_at(&app.base, program, script, key)
}

fn run_example_at(base: &str, program: &str, script: &str, key: &str) -> (bool, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(script);
    let out = Command::new(program)
        .arg(&path)
        .env("GUILDKEY_URL", base)
        .env("GUILDKEY_KEY", key)
        .env("GUILD_ID", ids::DEMO_GUILD_ID.to_string())
        .env("USER_ID", ids::PAT_ID.to_string())
        .env("ROLE_ID", ids::VERIFIED_ROLE_ID.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed to run {script}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_node_and_curl_examples_work_against_the_listener() {
    let app = spawn_app().await;
    let key = app.create_key(ids::DEMO_GUILD_ID, "example", "bans.read,roles.write", &[]);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (ok, out) = run_example(&app, "python3", "python_example.py", &key);
    assert!(ok, "{out}");
    assert!(out.contains("key example") && out.contains("banned=false") && out.contains("role changed=true"), "{out}");
    assert!(app.double.member_roles(ids::DEMO_GUILD_ID, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID));

    let (ok, out) = run_example(&app, "node", "node_example.mjs", &key);
    assert!(ok, "{out}");
    assert!(out.contains("banned=false") && out.contains("role changed=false"), "idempotent second add: {out}");

    let (ok, out) = run_example(&app, "sh", "curl.sh", &key);
    assert!(ok, "{out}");
    assert!(out.contains(r#""banned":false"#) && out.contains(r#""changed":false"#), "{out}");
    // A base URL written with a trailing slash works the same.
    let (ok, out) = run_example_at(&format!("{}/", app.base), "sh", "curl.sh", &key);
    assert!(ok && out.contains(r#""banned":false"#) && out.contains(r#""changed":false"#), "{out}");

    // A key without roles.write gets a typed error, not a crash.
    let narrow = app.create_key(ids::DEMO_GUILD_ID, "narrow", "bans.read", &[]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ok, out) = run_example(&app, "python3", "python_example.py", &narrow);
    assert!(!ok && out.contains("role error=insufficient_scope"), "{out}");
    // curl.sh says so too, and exits non-zero rather than carry on.
    let (ok, out) = run_example(&app, "sh", "curl.sh", &narrow);
    assert!(!ok && out.contains("insufficient_scope"), "{out}");
    app.double.assert_no_violations();
}
