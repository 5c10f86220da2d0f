//! The bot helper set: slash commands sent through the Discord double as a
//! member of the demo guild would send them, and the bot's answers.

use std::time::Duration;

use discord_double::{InteractionReply, SentInteraction, SlashBuilder};

use super::{ids, token_regex, App};

/// How long the bot may take to answer.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sends `command` and waits for the bot's answer.
pub async fn answer(app: &App, command: SlashBuilder) -> InteractionReply {
    let sent = command.send().await.expect("send the command");
    app.double.wait_for_response(&sent, WAIT).await.expect("the bot answers")
}

/// `/apikey create name:NAME scopes:SCOPES` as `user`.
pub async fn create(app: &App, user: u64, name: &str, scopes: &str) -> InteractionReply {
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, user)
        .subcommand("apikey", "create")
        .string("name", name)
        .string("scopes", scopes)
        .send()
        .await
        .expect("send /apikey create");
    app.double.wait_for_response(&sent, WAIT).await.expect("a reply")
}

/// The key a `/apikey create` or `rotate` reply shows.
pub fn secret_in(reply: &InteractionReply) -> String {
    token_regex().find(&reply.all_text()).expect("a token in the reply").as_str().to_owned()
}

/// `/apikey SUB key:KEY` as `user`: what was sent and the answer.
pub async fn run(app: &App, user: u64, sub: &str, key: &str) -> (SentInteraction, InteractionReply) {
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, user)
        .subcommand("apikey", sub)
        .string("key", key)
        .send()
        .await
        .expect("send the command");
    let reply = app.double.wait_for_response(&sent, WAIT).await.expect("a reply");
    (sent, reply)
}

/// Presses a button on the bot's reply and waits for the message to change.
pub async fn press(app: &App, user: u64, reply: &InteractionReply, which: &str) -> InteractionReply {
    let id = reply.custom_ids().into_iter().find(|c| c.ends_with(which)).expect("the button");
    let message = reply.followups.last().cloned().or(reply.message.clone()).expect("the prompt message");
    let click = app.double.click(ids::DEMO_GUILD_ID, user, &message, &id).await.expect("click");
    app.double
        .wait_for_response_matching(&click, |r| r.components.is_empty() && !r.content.is_empty(), WAIT)
        .await
        .expect("the prompt is answered")
}

impl App {
    /// Points the demo guild's audit channel at #audit-log, as admin Alice
    /// would with `/apikey audit-channel`, and waits for the bot's answer.
    pub async fn set_audit_channel(&self) {
        let command = self.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "audit-channel");
        let reply = answer(self, command.channel("channel", ids::AUDIT_LOG_CHANNEL_ID)).await;
        assert!(reply.all_text().contains("Audit entries now go to"), "{}", reply.all_text());
    }

    /// Turns the demo guild's audit posts off, as admin Alice would with
    /// `/apikey audit-channel` and no channel, and waits for the answer.
    pub async fn turn_audit_channel_off(&self) {
        let command = self.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "audit-channel");
        let reply = answer(self, command).await;
        assert!(reply.all_text().contains("Audit posts are off"), "{}", reply.all_text());
    }
}
