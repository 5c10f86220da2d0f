//! No key outranks its maker (issue 22): every moderator-grade permission,
//! channel overwrites included, makes a role untouchable; a protected
//! member loses no role; the breaker counts unbans and a test key's dry
//! runs; a secret past its grace revokes nothing; a leak report's words
//! are shown in code spans; GitHub's signature is checked when configured.

use super::*;
use guildkey::discord::permissions as p;

/// A plain role below the bot (position 1, no permissions).
const PLAIN_ROLE_ID: u64 = 1_400_000_000_000_000_107;
/// The first of the roles each carrying one moderator-grade permission.
const MOD_ROLES_FROM: u64 = 1_400_000_000_000_000_200;

/// The permissions the guard added in issue 22, as the refusal names them.
const NEWLY_PROTECTED: [(u64, &str); 10] = [
    (p::MANAGE_MESSAGES, "Manage Messages"),
    (p::MANAGE_THREADS, "Manage Threads"),
    (p::MANAGE_GUILD_EXPRESSIONS, "Manage Expressions"),
    (p::MENTION_EVERYONE, "Mention Everyone"),
    (p::MANAGE_NICKNAMES, "Manage Nicknames"),
    (p::MANAGE_EVENTS, "Manage Events"),
    (p::VIEW_AUDIT_LOG, "View Audit Log"),
    (p::MUTE_MEMBERS, "Mute Members"),
    (p::DEAFEN_MEMBERS, "Deafen Members"),
    (p::MOVE_MEMBERS, "Move Members"),
];

/// The demo world plus a plain role and one role per newly protected
/// permission; `overwrites` (channel, role, allow) are in place at start.
async fn double_with_roles(overwrites: &[(u64, u64, u64)]) -> discord_double::Double {
    let mut cfg = DoubleConfig::demo();
    let roles = &mut cfg.guilds[0].roles;
    roles.push(discord_double::RoleSeed::new(PLAIN_ROLE_ID, "Plain", 1, 0));
    for (n, (bit, name)) in NEWLY_PROTECTED.iter().enumerate() {
        roles.push(discord_double::RoleSeed::new(MOD_ROLES_FROM + n as u64, name, 1, *bit));
    }
    let double = discord_double::Double::start(cfg).await.expect("double");
    for &(channel, role, allow) in overwrites {
        double.set_role_overwrite(DEMO, channel, role, allow, 0);
    }
    double
}

#[tokio::test]
async fn granting_or_removing_a_role_with_any_moderator_grade_permission_is_refused() {
    let app = spawn_against(double_with_roles(&[]).await, Options::default()).await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.clear_recorded();

    for (n, (_, name)) in NEWLY_PROTECTED.iter().enumerate() {
        let role = MOD_ROLES_FROM + n as u64;
        for reply in [
            put(&app, &role_path(DEMO, ids::PAT_ID, role), &token).await,
            delete(&app, &role_path(DEMO, ids::PAT_ID, role), &token).await,
        ] {
            let message = reply.err(403, "role_not_allowed").message();
            assert!(message.contains(name), "{name}: {message}");
        }
    }
    assert_no_writes(&app);
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_role_without_permissions_that_moderates_one_channel_is_refused_and_the_gateway_keeps_it_current() {
    // Arrange: "Plain" may manage #general's messages; nothing else.
    let general = ids::GENERAL_CHANNEL_ID;
    let app =
        spawn_against(double_with_roles(&[(general, PLAIN_ROLE_ID, p::MANAGE_MESSAGES)]).await, Options::default())
            .await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;
    let path = role_path(DEMO, ids::PAT_ID, PLAIN_ROLE_ID);

    // Act + Assert: refused, naming the channel; each overwrite power alike.
    let message = put(&app, &path, &token).await.err(403, "role_not_allowed").message();
    assert!(message.contains("Manage Messages") && message.contains(&format!("<#{general}>")), "{message}");
    for (bit, name) in [
        (p::MANAGE_ROLES, "Manage Permissions"),
        (p::MANAGE_CHANNELS, "Manage Channels"),
        (p::MANAGE_WEBHOOKS, "Manage Webhooks"),
    ] {
        app.double.set_role_overwrite(DEMO, general, PLAIN_ROLE_ID, bit, 0);
        let started = Instant::now();
        loop {
            let reply = put(&app, &path, &token).await;
            if reply.status == 403 && reply.message().contains(name) {
                break;
            }
            assert!(started.elapsed() < WAIT, "{name} never refused: {} {}", reply.status, reply.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_no_writes(&app);
    // A deny-only overwrite grants nothing: the role is plain again.
    app.double.set_role_overwrite(DEMO, general, PLAIN_ROLE_ID, 0, p::MANAGE_MESSAGES);
    let started = Instant::now();
    while put(&app, &path, &token).await.status != 200 {
        assert!(started.elapsed() < WAIT, "the overwrite's removal never reached the guard");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).contains(&PLAIN_ROLE_ID));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_listener_without_a_gateway_reads_channel_overwrites_too() {
    let general = ids::GENERAL_CHANNEL_ID;
    let double = double_with_roles(&[(general, PLAIN_ROLE_ID, p::MANAGE_WEBHOOKS)]).await;
    let app = spawn_against(double, Options::only("http")).await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;

    let message =
        put(&app, &role_path(DEMO, ids::PAT_ID, PLAIN_ROLE_ID), &token).await.err(403, "role_not_allowed").message();
    assert!(message.contains("Manage Webhooks"), "{message}");
    assert_no_writes(&app);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn removing_a_role_from_the_owner_or_a_moderator_is_refused_and_from_a_plain_member_is_not() {
    let app = spawn_against(double_with_roles(&[]).await, Options::default()).await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    for user in [ids::ALICE_ID, ids::MORGAN_ID, ids::PAT_ID] {
        // Granting a plain role is fine, whoever gets it.
        assert_eq!(put(&app, &role_path(DEMO, user, PLAIN_ROLE_ID), &token).await.ok()["changed"], true);
    }
    app.double.clear_recorded();

    for (user, why) in [(ids::ALICE_ID, "owner"), (ids::MORGAN_ID, "Manage Server")] {
        let message =
            delete(&app, &role_path(DEMO, user, PLAIN_ROLE_ID), &token).await.err(403, "member_protected").message();
        assert!(message.contains(why) && message.contains("cannot lose a role"), "{why}: {message}");
        assert!(app.double.member_roles(DEMO, user).contains(&PLAIN_ROLE_ID), "{why} kept the role");
    }
    assert_no_writes(&app);
    assert_eq!(delete(&app, &role_path(DEMO, ids::PAT_ID, PLAIN_ROLE_ID), &token).await.ok()["changed"], true);
    assert!(!app.double.member_roles(DEMO, ids::PAT_ID).contains(&PLAIN_ROLE_ID));
    assert_eq!(api_events(&app, &reader).await.len(), 4, "three grants and one removal");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_with_a_ban_budget_of_one_cannot_unban_two() {
    let app = spawn_app().await;
    let banned = [1_200_000_000_000_500_001u64, 1_200_000_000_000_500_002];
    for user in banned {
        app.double.add_ban(DEMO, user, Some("spam"));
    }
    let token = key(&app, DEMO, "pardoner", "bans.write", &["--ban-budget", "1"]).await;

    assert_eq!(delete(&app, &ban_path(DEMO, banned[0]), &token).await.ok()["changed"], true);
    let message = delete(&app, &ban_path(DEMO, banned[1]), &token).await.err(401, "key_suspended").message();
    assert!(message.contains("1 bans in 10 minutes"), "{message}");

    assert_eq!(calls(&app, "DELETE", BAN_ROUTE).len(), 1, "the second unban never reached Discord");
    assert!(app.double.bans(DEMO).contains_key(&banned[1]));
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn on_sqlite_too_a_restart_does_not_refill_the_ban_budget() {
    let mut app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.write", &["--ban-budget", "2"]).await;
    let mut statuses = Vec::new();
    for round in 0..3u64 {
        statuses.push(put(&app, &ban_path(DEMO, 1_200_000_000_000_900_000 + round), &token).await.status);
        if round < 2 {
            app.restart().await;
        }
    }
    assert_eq!(statuses, [200, 200, 401], "two bans, then the breaker, across two restarts");
    assert_eq!(app.double.bans(DEMO).len(), 2);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_dry_runs_stop_at_its_budget() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test", "--ban-budget", "2"]).await;

    for user in [1_200_000_000_000_600_001u64, 1_200_000_000_000_600_002] {
        let data = put(&app, &ban_path(DEMO, user), &token).await.ok();
        assert_eq!((&data["dry_run"], data["audit_event_id"].is_i64()), (&json!(true), true), "{data}");
    }
    // The third reads what a live ban would, then trips the breaker.
    put(&app, &ban_path(DEMO, 1_200_000_000_000_600_003), &token).await.err(401, "key_suspended");
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");
    app.double.clear_recorded();
    for user in 4..10u64 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_600_000 + user), &token).await.err(401, "key_suspended");
    }
    let reads = app.double.calls().iter().filter(|c| c.path.contains("/api/v10/guilds/")).count();
    assert_eq!(reads, 0, "a suspended test key reads nothing from Discord: {:?}", app.double.calls());
    assert!(writes(&app).is_empty());
    app.double.assert_no_violations();
}

/// POSTs a leak report.
async fn report(app: &App, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut request =
        app.http.post(app.url("/v1/leaked")).header("content-type", "application/json").body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

fn leak(token: &str, source: &str, url: &str) -> Value {
    json!({ "token": token, "type": "guildkey_api_key", "source": source, "url": url })
}

/// Waits until `token` is refused as revoked.
async fn until_revoked(app: &App, token: &str) {
    let started = Instant::now();
    while get(app, "/v1/verify", token).await.status != 401 {
        assert!(started.elapsed() < WAIT, "the reported key was never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(app, "/v1/verify", token).await.err(401, "key_revoked");
}

#[tokio::test]
async fn reporting_a_rotated_out_secret_past_its_grace_leaves_the_new_secret_working() {
    // Arrange: a key rotated with a 1 s grace, the grace over.
    let app = spawn_app().await;
    let old = key(&app, DEMO, "game", "bans.read", &[]).await;
    let out = app.cli(&["keys", "rotate", &old[..12], "--grace", "1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let started = Instant::now();
    while get(&app, "/v1/verify", &old).await.status != 401 {
        assert!(started.elapsed() < WAIT, "the grace never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let canary = key(&app, DEMO, "canary", "guild.read", &[]).await;

    // Act: the dead secret reported, then a canary in the same report (the
    // report's tokens are handled in order: once the canary is revoked, the
    // dead secret has been judged).
    let body = json!([leak(&old, "content", "https://github.com/o/r"), leak(&canary, "content", "https://x")]);
    assert_eq!(report(&app, &body, &[]).await.status, 200);
    until_revoked(&app, &canary).await;

    // Assert: the live secret still works.
    get(&app, "/v1/verify", &new).await.ok();
    get(&app, "/v1/verify", &old).await.err(401, "invalid_key");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_reports_source_and_url_are_bounded_and_shown_in_code_spans_never_as_links() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;

    // Too long: 400, saying which and the limit; nothing revoked.
    for (source, url, field_name, limit) in [
        ("x".repeat(101), "https://a".to_owned(), "source", "100"),
        ("c".into(), format!("https://{}", "u".repeat(193)), "url", "200"),
    ] {
        let message = report(&app, &json!([leak(&token, &source, &url)]), &[]).await.err(400, "bad_request").message();
        assert!(message.contains(field_name) && message.contains(limit), "{message}");
    }
    get(&app, "/v1/verify", &token).await.ok();

    let source = "[click me](https://evil.example) @everyone <@1200000000000000001> **x**";
    let url = "https://evil.example/`oops`/a_b?c=<d>\nnext";
    assert_eq!(report(&app, &json!([leak(&token, source, url)]), &[]).await.status, 200);
    until_revoked(&app, &token).await;

    let post = audit_post(&app, "API key revoked").await;
    let (by, at) = (field(&post, "Reported by"), field(&post, "Found at"));
    assert_eq!(by, format!("`{source}`"), "one code span, the text as typed");
    // A backtick cannot end the span early; the line break was dropped.
    assert_eq!(at, "`https://evil.example/'oops'/a_b?c=<d>next`");
    app.double.assert_no_violations();
}

/// GitHub's side: a P-256 key pair, its public half in GitHub's document.
struct Github {
    key: p256::ecdsa::SigningKey,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Github {
    fn new() -> Self {
        use p256::pkcs8::EncodePublicKey as _;
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let pem = key.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let doc = json!({ "public_keys": [
            { "key_identifier": "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a", "key": pem, "is_current": true },
        ]});
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("github-secret-scanning-keys.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        Self { key, _dir: dir, file }
    }

    fn key_id(&self) -> &'static str {
        "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
    }

    /// `Github-Public-Key-Signature` for `body`, by `key`.
    fn sign(key: &p256::ecdsa::SigningKey, body: &str) -> String {
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let signature: p256::ecdsa::Signature = key.sign(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

#[tokio::test]
async fn with_githubs_keys_configured_a_report_needs_githubs_signature_and_the_refusal_says_why_only_in_the_log() {
    // Arrange: the listener holds GitHub's keys (no refresh: no network).
    let github = Github::new();
    let config = format!(
        "[leaks]\ngithub_public_keys_file = {:?}\ngithub_public_keys_url = \"\"\n",
        github.file.display().to_string()
    );
    let app = spawn_app_with(Options { config, ..Options::default() }).await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let body = json!([leak(&token, "content", "https://github.com/octo/game/blob/main/.env")]).to_string();
    let post = |body: String, headers: Vec<(&'static str, String)>| {
        let mut request = app.http.post(app.url("/v1/leaked")).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        send(request)
    };
    let stranger = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);

    // Act + Assert: unsigned, signed by another key, signed over another
    // body, or naming an unknown key: 400 that says nothing of why.
    let refused = [
        post(body.clone(), vec![]).await,
        post(
            body.clone(),
            vec![
                ("Github-Public-Key-Identifier", github.key_id().into()),
                ("Github-Public-Key-Signature", Github::sign(&stranger, &body)),
            ],
        )
        .await,
        post(
            body.clone(),
            vec![
                ("Github-Public-Key-Identifier", github.key_id().into()),
                ("Github-Public-Key-Signature", Github::sign(&github.key, "[]")),
            ],
        )
        .await,
        post(
            body.clone(),
            vec![
                ("Github-Public-Key-Identifier", "another".into()),
                ("Github-Public-Key-Signature", Github::sign(&github.key, &body)),
            ],
        )
        .await,
    ];
    for reply in &refused {
        let message = reply.err(400, "bad_request").message();
        assert!(!message.contains("signature") && !message.contains("key"), "the answer says why: {message}");
    }
    get(&app, "/v1/verify", &token).await.ok();
    for why in ["carries no Github-Public-Key", "does not match its body", "does not hold"] {
        // The binary's log lines are read as they come: wait for them.
        let started = Instant::now();
        while !app.logs().iter().any(|l| l.contains(why)) {
            assert!(started.elapsed() < WAIT, "the log never said why ({why})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // GitHub's own signature: accepted, and the key revoked.
    let signed = post(
        body.clone(),
        vec![
            ("Github-Public-Key-Identifier", github.key_id().into()),
            ("Github-Public-Key-Signature", Github::sign(&github.key, &body)),
        ],
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    until_revoked(&app, &token).await;
    app.double.assert_no_violations();
}

/// Serves `document` to every GET, over plain HTTP on loopback: GitHub's
/// public keys endpoint as the refresh sees it.
async fn serve_document(document: String) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let document = document.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/meta/public_keys/secret_scanning")
}

#[tokio::test]
async fn githubs_keys_are_refreshed_from_the_configured_url_and_the_file_rewritten() {
    // Arrange: the file holds GitHub's old key; GitHub now serves a new one.
    use p256::pkcs8::EncodePublicKey as _;
    let github = Github::new();
    let rotated = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pem = rotated.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let served = json!({ "public_keys": [{ "key_identifier": "rotated", "key": pem, "is_current": true }] });
    let url = serve_document(served.to_string()).await;
    let config = format!(
        "[leaks]\ngithub_public_keys_file = {:?}\ngithub_public_keys_url = {url:?}\n",
        github.file.display().to_string()
    );
    let app = spawn_app_with(Options { config, ..Options::default() }).await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;

    // Act: the refresh at start rewrites the file.
    let started = Instant::now();
    while !std::fs::read_to_string(&github.file).unwrap().contains("rotated") {
        assert!(started.elapsed() < WAIT, "the file was never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!([leak(&token, "content", "https://github.com/o/r")]).to_string();
    let signed = app
        .http
        .post(app.url("/v1/leaked"))
        .header("Github-Public-Key-Identifier", "rotated")
        .header("Github-Public-Key-Signature", Github::sign(&rotated, &body))
        .body(body);

    // Assert: the new key's report is taken.
    assert_eq!(send(signed).await.status, 200);
    until_revoked(&app, &token).await;
}
