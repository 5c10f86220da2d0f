//! Expiry reminders.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::{Action, Actor, AuditEvent};
use guildkey::service::{IssuedKey, KeyRequest, KeyService};

/// A key of `guild` that expires in `ttl` (e.g. `6d`, `12h`).
async fn expiring(service: &KeyService, guild: u64, name: &str, ttl: &str) -> IssuedKey {
    service
        .issue(
            guild,
            draft(KeyRequest { name, scopes: "bans.read", expires_in: Some(ttl), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap_or_else(|e| panic!("issue {name:?}: {e}"))
}

/// A guild's expiry reminders, oldest first: (key name, "7 days" or "1 day").
async fn reminders(service: &KeyService, guild: u64) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = events(service, guild)
        .await
        .into_iter()
        .filter(|e| e.action == Action::KeyExpiring)
        .map(|e| (e.key_name.unwrap_or_default(), e.details["within"].as_str().unwrap_or_default().to_owned()))
        .collect();
    found.reverse();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(k, w)| ((*k).to_owned(), (*w).to_owned())).collect()
}

#[tokio::test]
async fn each_expiry_threshold_is_announced_once_per_key_as_time_passes() {
    // Arrange: keys expiring in 10 days, 6 days, 12 hours and one already
    // expired (at `now`, a few seconds on), plus a revoked one and a
    // suspended one within the week.
    let db = Db::new();
    let (_, service) = db.open(10).await;
    let ten = expiring(&service, GUILD, "ten days", "10d").await;
    let six = expiring(&service, GUILD, "six days", "6d").await;
    let half = expiring(&service, GUILD, "twelve hours", "12h").await;
    expiring(&service, GUILD, "gone", "1s").await;
    expiring(&service, GUILD, "revoked", "5d").await;
    service.revoke(Some(GUILD), "revoked", &Actor::Cli).await.unwrap();
    expiring(&service, GUILD, "suspended", "3d").await;
    service.set_suspended(Some(GUILD), "suspended", true, &Actor::Cli, serde_json::json!({})).await.unwrap();
    let now = Utc::now() + chrono::Duration::seconds(5);
    let day = chrono::Duration::days(1);
    let hour = chrono::Duration::hours(1);

    // Act and assert, step by step through 11 days.
    assert_eq!(service.send_expiry_reminders(now).await.unwrap(), 3, "6 days, 12 hours and the suspended key");
    assert_eq!(
        reminders(&service, GUILD).await,
        pairs(&[("twelve hours", "1 day"), ("suspended", "7 days"), ("six days", "7 days")]),
        "soonest expiry first"
    );
    assert_eq!(service.send_expiry_reminders(now).await.unwrap(), 0, "the same check again announces nothing");
    assert_eq!(service.send_expiry_reminders(now + chrono::Duration::minutes(1)).await.unwrap(), 0);
    // A restart: a new instance on the same database remembers.
    let (_, restarted) = db.open(10).await;
    assert_eq!(restarted.send_expiry_reminders(now + chrono::Duration::minutes(2)).await.unwrap(), 0);
    // A rotation keeps the key (and what it was told): no second "7 days".
    let rotated = service.rotate(Some(GUILD), "six days", None, &Actor::Cli).await.unwrap();
    assert_eq!(service.send_expiry_reminders(now + hour).await.unwrap(), 0);

    assert_eq!(restarted.send_expiry_reminders(now + day * 2 + hour).await.unwrap(), 1, "suspended, under 1 day");
    assert_eq!(restarted.send_expiry_reminders(now + day * 4).await.unwrap(), 1, "ten days, now 6 days away");
    assert_eq!(restarted.send_expiry_reminders(now + day * 4 + hour).await.unwrap(), 0);
    assert_eq!(service.send_expiry_reminders(now + day * 5 + hour).await.unwrap(), 1, "six days, now under 1 day");
    assert_eq!(service.send_expiry_reminders(now + day * 9 + hour).await.unwrap(), 1, "ten days, now under 1 day");
    for later in [day * 9 + hour * 2, day * 11, day * 30] {
        assert_eq!(service.send_expiry_reminders(now + later).await.unwrap(), 0, "{later}");
    }

    let all = reminders(&service, GUILD).await;
    assert_eq!(
        all,
        pairs(&[
            ("twelve hours", "1 day"),
            ("suspended", "7 days"),
            ("six days", "7 days"),
            ("suspended", "1 day"),
            ("ten days", "7 days"),
            ("six days", "1 day"),
            ("ten days", "1 day"),
        ]),
        "each threshold once per key; none for the expired or the revoked key, no \"7 days\" after \"1 day\""
    );
    let entries: Vec<AuditEvent> =
        events(&service, GUILD).await.into_iter().filter(|e| e.action == Action::KeyExpiring).collect();
    for e in &entries {
        assert_eq!((e.actor.as_str(), e.actor_kind.as_str()), ("guildkey", "system"));
        assert!(!e.test);
        let key = [&ten, &six, &half].into_iter().find(|k| Some(k.record.name.as_str()) == e.key_name.as_deref());
        if let Some(key) = key {
            assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
            let expires: chrono::DateTime<Utc> = serde_json::from_value(e.details["expires_at"].clone()).unwrap();
            assert_eq!(Some(expires), key.record.expires_at, "{e:?}");
        }
    }
    let six_days_later =
        entries.iter().find(|e| e.key_name.as_deref() == Some("six days") && e.details["within"] == "1 day");
    assert_eq!(
        six_days_later.and_then(|e| e.key_prefix.as_deref()),
        Some(rotated.record.prefix.as_str()),
        "the current prefix"
    );
    assert_eq!(service.audit_log(OTHER_GUILD, 100, None).await.unwrap().len(), 0, "nothing for another guild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_checking_at_once_announce_each_reminder_once() {
    // Arrange: two instances on one database, twelve keys in three guilds
    // expiring in 30, 40, ... 140 hours.
    let db = Db::new();
    let (_, first) = db.open(10).await;
    let (_, second) = db.open(10).await;
    let guilds = [GUILD, OTHER_GUILD, 555_555_555_555_555_555];
    for i in 0..12 {
        let ttl = format!("{}h", 30 + i * 10);
        expiring(if i % 2 == 0 { &first } else { &second }, guilds[i % 3], &format!("key {i}"), &ttl).await;
    }
    let now = Utc::now() + chrono::Duration::seconds(1);
    let later = now + chrono::Duration::minutes(30 * 60 + 30);

    // Act: at each moment, each instance checks twice, all four at once.
    let mut counts = Vec::new();
    for at in [now, now, now + chrono::Duration::minutes(1), later, later] {
        let calls: Vec<_> = [&first, &second, &first, &second]
            .into_iter()
            .map(|service| {
                let service = service.clone();
                tokio::spawn(async move { service.send_expiry_reminders(at).await })
            })
            .collect();
        let mut total = 0;
        for call in calls {
            total += call.await.expect("task").expect("check");
        }
        counts.push(total);
    }

    // Assert: every key hears "7 days" once; 30 h 30 min on, key 0 has
    // expired and keys 1 and 2 (9 h 30 min and 19 h 30 min left) hear
    // "1 day" once.
    assert_eq!(counts, [12, 0, 0, 2, 0]);
    let mut per_reminder = std::collections::HashMap::<(String, String), usize>::new();
    for guild in guilds {
        for reminder in reminders(&first, guild).await {
            *per_reminder.entry(reminder).or_default() += 1;
        }
    }
    assert!(per_reminder.values().all(|&n| n == 1), "each reminder once: {per_reminder:?}");
    assert_eq!(per_reminder.keys().filter(|(_, within)| within == "7 days").count(), 12);
    let mut day: Vec<&str> =
        per_reminder.keys().filter(|(_, within)| within == "1 day").map(|(k, _)| k.as_str()).collect();
    day.sort_unstable();
    assert_eq!(day, ["key 1", "key 2"]);
}
