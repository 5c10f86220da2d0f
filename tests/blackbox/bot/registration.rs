//! Where the command is registered, and how fast the bot answers.

use super::*;

#[tokio::test]
async fn the_command_is_registered_for_servers_only() {
    let app = spawn_app_with(Options {
        env: vec![("GUILDKEY_REGISTER_COMMANDS".into(), "global".into())],
        ..Options::default()
    })
    .await;
    let apikey = app.double.wait_for_command(None, "apikey", WAIT).await.expect("registered globally");

    assert_eq!(apikey["contexts"], serde_json::json!([0]), "guild context only: {apikey}");
    assert_eq!(apikey["integration_types"], serde_json::json!([0]), "installable to servers only: {apikey}");
    // Discord therefore never offers it in DMs; the double refuses like Discord would.
    let refused = app.double.dm_slash(ids::ALICE_ID).subcommand("apikey", "list").send().await;
    assert!(refused.is_err());
    app.double.assert_no_violations();
}

/// Prints the time from INTERACTION_CREATE to the interaction callback over
/// 100 commands (median and max); the figure is for the README and notes.
#[tokio::test]
async fn interaction_latency_report() {
    let app = spawn_app().await;
    let mut samples = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let sent =
            app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list").send().await.unwrap();
        let call = app
            .double
            .wait_for_call(|c| c.method == "POST" && c.path.contains(&format!("/interactions/{}/", sent.id)), WAIT)
            .await
            .expect("a callback");
        samples.push(call.at.saturating_duration_since(started));
        app.double.wait_for_response(&sent, WAIT).await.unwrap();
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!("interaction latency over {} commands: median {:?}, max {:?}", samples.len(), median, max);
    assert!(max < Duration::from_secs(3), "every interaction is answered inside Discord's 3-second window");
    app.double.assert_no_violations();
}
