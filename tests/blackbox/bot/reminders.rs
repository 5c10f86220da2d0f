//! Expiry reminders in the audit channel.

use super::*;

#[tokio::test]
async fn keys_expiring_in_two_days_and_in_20_hours_get_one_reminder_each_even_across_a_restart() {
    // Checks every second (`keys.expiry_check_seconds`) instead of every minute.
    let opts = Options { config: "[keys]\nexpiry_check_seconds = 1\n".into(), ..Options::default() };
    let mut app = spawn_app_with(opts).await;
    app.set_audit_channel().await;

    let secret = app.create_key(ids::DEMO_GUILD_ID, "nightly export", "audit.read", &["--expires", "2d"]);
    // Past both thresholds at once: only the more urgent one is announced.
    app.create_key(ids::DEMO_GUILD_ID, "hourly sync", "audit.read", &["--expires", "20h"]);

    let is_reminder = |m: &discord_double::RecordedMessage| m.text().contains("API key expires within");
    let is_week = |m: &discord_double::RecordedMessage| is_reminder(m) && m.text().contains("nightly export");
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, is_week, WAIT)
        .await
        .expect("an expiry reminder in the audit channel");
    let day = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| is_reminder(m) && m.text().contains("hourly sync"), WAIT)
        .await
        .expect("the other key's reminder");
    assert!(day.text().contains("API key expires within 1 day"), "{}", day.text());
    let text = posted.text();
    assert!(text.contains("API key expires within 7 days"), "{text}");
    assert!(text.contains("nightly export") && text.contains(&secret[..12]), "the key's name and prefix: {text}");
    assert!(text.contains("guildkey"), "by guildkey: {text}");
    let expires_ms =
        support::db_scalar(&app.db_url, "select expires_at from api_key where name = 'nightly export'").unwrap();
    assert!(text.contains(&format!("<t:{}:R>", expires_ms / 1000)), "the expiry as a Discord timestamp: {text}");

    // A while later, and after a restart, still exactly one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.wait_for_audit_outbox().await;
    let reminders: Vec<_> =
        app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).into_iter().filter(|m| is_reminder(m)).collect();
    assert_eq!(
        reminders.len(),
        2,
        "one reminder per key, never repeated: {:?}",
        reminders.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    let recorded = support::db_scalar(&app.db_url, "select count(*) from audit_event where action = 'key.expiring'");
    assert_eq!(recorded, Some(2));
    app.double.assert_no_violations();
}
