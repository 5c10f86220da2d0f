//! Audit events.

use crate::helpers::*;
use guildkey::audit::{Action, Actor, AuditEvent};
use guildkey::service::{KeyRequest, KeyService};

#[tokio::test]
async fn every_change_writes_exactly_one_audit_event_naming_its_actor() {
    let db = Db::new();
    let service = db.service().await;
    let admin = Actor::User(ADMIN);
    let admin_label = format!("<@{ADMIN}>");
    let mut expected = 0;

    /// Asserts exactly one new event and returns it.
    async fn one_new(service: &KeyService, expected: &mut usize, action: Action, actor: &str) -> AuditEvent {
        *expected += 1;
        let log = events(service, GUILD).await;
        assert_eq!(log.len(), *expected, "{action:?} must write exactly one event: {log:#?}");
        let newest = log.into_iter().next().unwrap();
        assert_eq!(newest.action, action, "{newest:#?}");
        assert_eq!(newest.actor, actor, "{newest:#?}");
        newest
    }

    // Created by an admin through a slash command.
    let key = service.issue(GUILD, named("audited"), &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyCreated, &admin_label).await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    assert_eq!(e.key_name.as_deref(), Some("audited"));
    assert_eq!(e.key_prefix.as_deref(), Some(key.record.prefix.as_str()));
    assert!(!e.test);

    // Rotated by the operator CLI.
    let rotated = service.rotate(None, key.record.id.as_str(), None, &Actor::Cli).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyRotated, "The operator CLI").await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    assert_eq!(e.key_prefix.as_deref(), Some(rotated.record.prefix.as_str()), "names the key by its new prefix");

    // A write made through the API with the key.
    let caller = service.authenticate(rotated.secret.expose(), anywhere()).unwrap();
    service.record_api_write(&caller, Action::BanAdded, serde_json::json!({"user_id": "5"})).await.unwrap();
    let e = one_new(&service, &mut expected, Action::BanAdded, "An API key").await;
    assert_eq!(e.key_name.as_deref(), Some("audited"));
    assert_eq!(e.key_prefix.as_deref(), Some(rotated.record.prefix.as_str()));
    assert!(!e.test, "a live key's write is not a test");

    // A test key's dry run is marked as a test.
    let test_key = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "dry", scopes: "bans.write", environment: Some("test"), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    one_new(&service, &mut expected, Action::KeyCreated, "The operator CLI").await;
    let test_caller = service.authenticate(test_key.secret.expose(), anywhere()).unwrap();
    service.record_api_write(&test_caller, Action::RoleAdded, serde_json::json!({})).await.unwrap();
    let e = one_new(&service, &mut expected, Action::RoleAdded, "An API key").await;
    assert!(e.test, "a test key's write is marked as a test");

    // Audit channel set and turned off by an admin.
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::AuditChannelSet, &admin_label).await;
    assert_eq!(e.key_id, None);
    assert_eq!(e.details["channel_id"], CHANNEL.to_string());
    assert_eq!(service.audit_channel(GUILD).await.unwrap(), Some(CHANNEL));
    service.set_audit_channel(GUILD, None, &admin).await.unwrap();
    one_new(&service, &mut expected, Action::AuditChannelSet, &admin_label).await;
    assert_eq!(service.audit_channel(GUILD).await.unwrap(), None);

    // Revoked by an admin, deleted by the CLI.
    service.revoke(Some(GUILD), &rotated.record.prefix, &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyRevoked, &admin_label).await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    service.delete(None, key.record.id.as_str(), &Actor::Cli).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyDeleted, "The operator CLI").await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));

    // Refused changes write nothing.
    let _ = service.revoke(None, key.record.id.as_str(), &admin).await.unwrap_err();
    let _ = service.delete(None, test_key.record.id.as_str(), &admin).await.unwrap_err();
    let _ = service.rotate(None, "key_0000000000000000", None, &admin).await.unwrap_err();
    let log = events(&service, GUILD).await;
    assert_eq!(log.len(), expected, "refused changes must not be audited: {log:#?}");

    // No event holds a secret, and other guilds see none of them.
    let all = serde_json::to_string(&log).unwrap();
    for secret in [&key.secret, &rotated.secret, &test_key.secret] {
        assert!(!all.contains(&secret.expose()[8..40]), "a secret in the audit log: {all}");
    }
    assert!(events(&service, OTHER_GUILD).await.is_empty());
}

#[tokio::test]
async fn setting_the_audit_channel_after_posts_were_off_records_what_happened_meanwhile() {
    // Arrange: posts on, then off, then twelve changes.
    let db = Db::new();
    let service = db.service().await;
    let admin = Actor::User(42);
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();
    service.set_audit_channel(GUILD, None, &admin).await.unwrap();
    let mut last = None;
    for i in 0..6 {
        let key = issue(&service, GUILD, &format!("k{i}")).await;
        service.revoke(Some(GUILD), key.record.id.as_str(), &Actor::Cli).await.unwrap();
        last = Some(key);
    }
    issue(&service, OTHER_GUILD, "elsewhere").await;

    // Act
    service.set_audit_channel(GUILD, Some(CHANNEL + 1), &admin).await.unwrap();
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();

    // Assert
    let log = events(&service, GUILD).await;
    let (switched, back_on, off) = (&log[0].details, &log[1].details, &log[14].details);
    assert_eq!(off["channel_id"], serde_json::Value::Null);
    assert_eq!(off["previous_channel_id"], CHANNEL.to_string(), "the off event names the channel it turns off");
    let summary = &back_on["while_off"];
    assert_eq!(summary["count"], 12, "this guild's changes only: {summary}");
    assert_eq!(summary["turned_off_by"], "<@42>");
    assert_eq!(summary["since"], serde_json::to_value(log[14].at).unwrap());
    let recent = summary["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 10, "the latest ten");
    assert_eq!(recent[0]["action"], "key.revoked");
    assert_eq!(recent[0]["key_name"], "k5");
    assert_eq!(recent[0]["key_prefix"], last.unwrap().record.prefix.as_str());
    assert_eq!(recent[9]["key_name"], "k1", "newest first");
    assert!(switched.get("while_off").is_none(), "a switch from one channel to another hid nothing: {switched}");
    assert_eq!(switched["previous_channel_id"], (CHANNEL + 1).to_string());
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    for channel in 1..=5 {
        service.set_audit_channel(GUILD, Some(channel), &Actor::Cli).await.unwrap();
    }

    // Act
    let page = service.audit_log(GUILD, 2, None).await.unwrap();
    let next = service.audit_log(GUILD, 2, Some(page[1].id)).await.unwrap();
    let last = service.audit_log(GUILD, 100, Some(next[1].id)).await.unwrap();

    // Assert
    let channels = |events: &[AuditEvent]| -> Vec<String> {
        events.iter().map(|e| e.details["channel_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(channels(&page), ["5", "4"]);
    assert_eq!(channels(&next), ["3", "2"]);
    assert_eq!(channels(&last), ["1"]);
    assert_eq!(service.audit_log(GUILD, 0, None).await.unwrap().len(), 1, "a limit below 1 is clamped to 1");
}

#[tokio::test]
async fn an_api_write_recorded_before_discord_is_listed_posted_and_sent_only_once_done() {
    // Arrange: a key that writes, and three writes recorded before Discord
    // is asked.
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "writer").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let write = |user: &str| serde_json::json!({ "user_id": user });
    let before = events(&service, GUILD).await.len();
    let now = service.now();
    let due = |id: i64, pending: &[AuditEvent]| pending.iter().any(|e| e.id == id);

    // Act / Assert: pending, none is listed, due to post or to send.
    let done = service.record_pending_write(&caller, Action::BanAdded, write("1")).await.unwrap();
    let failed = service.record_pending_write(&caller, Action::BanAdded, write("2")).await.unwrap();
    let left = service.record_pending_write(&caller, Action::RoleAdded, write("3")).await.unwrap();
    assert_eq!(events(&service, GUILD).await.len(), before, "pending writes are not in the log");
    let unposted = store.unposted_audit_events(100, now).await.unwrap();
    assert!(![done, failed, left].iter().any(|id| due(*id, &unposted)), "no post before the outcome");
    assert!(!store.claim_audit_post(done, now, now + chrono::Duration::seconds(30)).await.unwrap());
    let unsent = store.unchecked_audit_events(100).await.unwrap();
    assert!(![done, failed, left].iter().any(|id| due(*id, &unsent)), "no webhook before the outcome");
    // Only the reconcile takes one whose writer's time ran out.
    assert!(service.pending_writes(now, 100).await.unwrap().is_empty(), "the writers still own them");
    let later = service.now() + chrono::Duration::from_std(guildkey::service::PENDING_FOR).unwrap();
    let ran_out: Vec<i64> = service.pending_writes(later, 100).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ran_out, vec![done, failed, left]);

    // Settled: done joins the log (once, however often it is settled),
    // failed stays out of everything.
    assert!(service.settle_write(done, true).await.unwrap());
    assert!(service.settle_write(failed, false).await.unwrap());
    assert!(!service.settle_write(done, false).await.unwrap(), "settled once");
    let log = events(&service, GUILD).await;
    assert_eq!(log.len(), before + 1, "{log:#?}");
    assert_eq!((log[0].id, log[0].action), (done, Action::BanAdded));
    let unposted = store.unposted_audit_events(100, now).await.unwrap();
    assert!(due(done, &unposted) && !due(failed, &unposted) && !due(left, &unposted));
    let unsent = store.unchecked_audit_events(100).await.unwrap();
    assert!(due(done, &unsent) && !due(failed, &unsent) && !due(left, &unsent));
    let ran_out: Vec<i64> = service.pending_writes(later, 100).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ran_out, vec![left], "only the unsettled one is left to the reconcile");
}
