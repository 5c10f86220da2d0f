//! Discord's 3 s for an interaction's first response, held whatever the
//! work behind it costs: on the production REST path (serenity's
//! ratelimiter on, the double as `https://discord.com`), a button press
//! whose work waits on a locked database is deferred within the window and
//! its result edits the message once the work is done.

use super::*;

const CALLBACK_ROUTE: &str = "/interactions/{interaction_id}/{interaction_token}/callback";

/// Holds SQLite's write lock on `db_url` for `hold` from when the returned
/// receiver fires (SQLite only: a slow database, as a busy disk or a long
/// transaction elsewhere makes it).
fn lock_the_database(db_url: &str, hold: Duration) -> tokio::sync::oneshot::Receiver<()> {
    use sqlx::Connection;
    let url = db_url.replace("mode=rwc", "mode=rw");
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open the database");
        sqlx::query("begin immediate").execute(&mut conn).await.expect("take the write lock");
        let _ = locked.send(());
        tokio::time::sleep(hold).await;
        sqlx::query("commit").execute(&mut conn).await.expect("let go");
    });
    is_locked
}

#[tokio::test]
async fn a_button_whose_work_is_slow_is_deferred_within_3_s_and_its_result_follows() {
    if support::db::on_postgres() {
        eprintln!("SKIPPED on PostgreSQL: the test holds SQLite's write lock");
        return;
    }
    let double = discord_double::Double::start(DoubleConfig::demo()).await.expect("start the Discord double");
    let opts = Options::production_rest(&double);
    let app = spawn_against(double, opts).await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);
    let (_, prompt) = run(&app, ids::ALICE_ID, "revoke", "game").await;

    // The revocation's write waits 4.5 s for the database.
    lock_the_database(&app.db_url, Duration::from_millis(4_500)).await.unwrap();
    let id = prompt.custom_ids().into_iter().find(|c| c.ends_with(":confirm")).expect("the Revoke button");
    let message = prompt.followups.last().cloned().or(prompt.message.clone()).expect("the prompt");
    let clicked = Instant::now();
    let click = app.double.click(ids::DEMO_GUILD_ID, ids::ALICE_ID, &message, &id).await.expect("click");
    let done = app
        .double
        .wait_for_response_matching(&click, |r| r.content.contains("Revoked"), WAIT)
        .await
        .expect("the revocation's result follows");
    let result_after = clicked.elapsed();

    let callbacks: Vec<_> = app
        .double
        .calls_to("POST", CALLBACK_ROUTE)
        .into_iter()
        .filter(|c| c.params.get("interaction_id").is_some_and(|i| *i == click.id.to_string()))
        .collect();
    assert_eq!(callbacks.len(), 1, "one first response");
    let first_after = callbacks[0].at.saturating_duration_since(clicked);
    eprintln!(
        "slow button: first response {first_after:?} after the press (type {}), the result {result_after:?} after it",
        done.callback_type
    );
    assert!(first_after < Duration::from_secs(3), "the first response came {first_after:?} after the press");
    assert_eq!((callbacks[0].status, done.callback_type), (204, 6), "a deferred update, taken");
    assert!(result_after >= Duration::from_secs(4), "the result waited for the database: {result_after:?}");
    assert!(done.components.is_empty(), "the buttons go with the result");
    assert_eq!(app.get("/v1/verify", &token).await.status(), 401, "the key was revoked");
    app.double.assert_no_violations();
}
