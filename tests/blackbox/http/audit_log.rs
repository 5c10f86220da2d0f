//! The audit log.

use super::*;

#[tokio::test]
async fn the_audit_log_lists_the_guilds_events_newest_first_with_every_field() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "auditor", "audit.read", &[]);
    let doomed = app.create_key(DEMO, "doomed", "bans.read", &[]);
    cli_ok(&app, &["keys", "revoke", &doomed[..12]]);
    cli_ok(&app, &["keys", "delete", &doomed[..12]]);
    let spinner = app.create_key(DEMO, "spinner", "bans.read", &[]);
    let spun = cli_ok(&app, &["keys", "rotate", &spinner[..12]]);
    // Another guild's events must never show.
    let outsider = app.create_key(OTHER, "outsider", "audit.read", &[]);
    let outsider = cli_ok(&app, &["keys", "rotate", &outsider[..12]]);
    let_the_listener_catch_up().await;

    let page = get(&app, &audit_path(DEMO, ""), &reader).await.ok();
    assert_eq!(keys_of(&page), ["events", "next_before"]);
    assert_eq!(page["next_before"], Value::Null, "one page holds everything");
    let events = page["events"].as_array().expect("events array");
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["key_name"].as_str().unwrap(), e["key_prefix"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("key.rotated", "spinner", &spun[..12]),
            ("key.created", "spinner", &spinner[..12]),
            ("key.deleted", "doomed", &doomed[..12]),
            ("key.revoked", "doomed", &doomed[..12]),
            ("key.created", "doomed", &doomed[..12]),
            ("key.created", "auditor", &reader[..12]),
        ]
    );

    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().expect("integer id")).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let mut previous_at = None;
    for e in events {
        assert_eq!(
            keys_of(e),
            ["action", "actor", "at", "details", "id", "key_id", "key_name", "key_prefix", "test"],
            "{e}"
        );
        assert_eq!(e["actor"], "The operator CLI");
        assert_eq!(e["test"], false);
        assert!(e["details"].is_object(), "{e}");
        assert!(e["key_id"].as_str().is_some_and(|id| id.starts_with("key_")), "{e}");
        let at = rfc3339(&e["at"]);
        assert!(previous_at.is_none_or(|p| at <= p), "times run newest first");
        previous_at = Some(at);
    }
    let rotated = &events[0]["details"];
    assert_eq!((&rotated["previous_prefix"], &rotated["new_prefix"]), (&json!(&spinner[..12]), &json!(&spun[..12])));
    assert_eq!(events[0]["key_id"], events[1]["key_id"], "a rotation keeps the key's id");

    // The other guild sees only its own.
    assert!(!page.to_string().contains("outsider"));
    let theirs = get(&app, &audit_path(OTHER, ""), &outsider).await.ok();
    let actions: Vec<_> = theirs["events"].as_array().unwrap().iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, [json!("key.rotated"), json!("key.created")]);
    assert!(!theirs.to_string().contains("spinner") && !theirs.to_string().contains("auditor"));
}

#[tokio::test]
async fn the_audit_log_clamps_limit_and_pages_with_next_before_until_null() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "auditor", "audit.read", &[]);
    app.create_key(DEMO, "spinner", "bans.read", &[]);
    let id = listed(&app, DEMO, "spinner")["key_id"].as_str().unwrap().to_owned();
    // 2 creations + 100 rotations: 102 events, more than the largest page.
    for _ in 0..100 {
        cli_ok(&app, &["keys", "rotate", &id]);
    }
    let outsider = app.create_key(OTHER, "outsider", "audit.read", &[]);
    let_the_listener_catch_up().await;

    let page = |query: &'static str| {
        let app = &app;
        let reader = &reader;
        async move { get(app, &audit_path(DEMO, query), reader).await.ok() }
    };
    let count = |page: &Value| page["events"].as_array().map_or(0, Vec::len);

    let one = page("?limit=0").await;
    assert_eq!(count(&one), 1, "limit=0 is clamped to 1");
    assert_eq!(one["next_before"], one["events"][0]["id"]);
    assert_eq!(one["events"][0]["action"], "key.rotated");
    assert_eq!(count(&page("?limit=-7").await), 1, "negative limits are clamped to 1");
    let most = page("?limit=500").await;
    assert_eq!(count(&most), 100, "limit=500 is clamped to 100");
    assert_eq!(most["next_before"], most["events"][99]["id"]);
    assert_eq!(count(&page("").await), 50, "the default limit is 50");

    // Follow next_before to the end.
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(b) => format!("?limit=40&before={b}"),
            None => "?limit=40".to_owned(),
        };
        let page = get(&app, &audit_path(DEMO, &query), &reader).await.ok();
        let events = page["events"].as_array().unwrap().clone();
        sizes.push(events.len());
        all.extend(events);
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => {
                assert_eq!(page["next_before"], Value::Null);
                break;
            }
        }
        assert!(sizes.len() < 10, "pagination does not end: {sizes:?}");
    }
    assert_eq!(sizes, [40, 40, 22]);
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "pages continue strictly older, no repeats");
    let actions: BTreeMap<&str, usize> = all.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e["action"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(actions, BTreeMap::from([("key.created", 2), ("key.rotated", 100)]));
    assert_eq!(all.last().unwrap()["key_name"], "auditor", "the oldest event comes last");
    assert!(all.iter().all(|e| e["key_name"] != "outsider"), "another guild's events never appear");

    // The other guild's log holds only its one event.
    let theirs = get(&app, &audit_path(OTHER, ""), &outsider).await.ok();
    assert_eq!(count(&theirs), 1);
    assert_eq!(theirs["events"][0]["key_name"], "outsider");
    // A `before` older than everything is an empty last page.
    let oldest = ids.last().unwrap();
    let empty = get(&app, &audit_path(DEMO, &format!("?before={oldest}")), &reader).await.ok();
    assert_eq!(empty, json!({"events": [], "next_before": null}));
}
