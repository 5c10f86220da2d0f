//! The Discord bot, end to end: the real binary's serenity/poise client
//! connected to the Discord double, driven by INTERACTION_CREATE events,
//! judged by the REST calls it makes (validated against Discord's OpenAPI
//! description) and by the HTTP listener's answers.

use crate::support;

use std::time::{Duration, Instant};

use discord_double::{DoubleConfig, FaultRule, InteractionReply, SentInteraction};
use support::{ids, json, spawn_against, spawn_app, spawn_app_with, token_regex, App, Options, BOT_TOKEN};

mod audit_channel;
mod commands;
mod leak_guard;
mod registration;
mod reminders;

const WAIT: Duration = Duration::from_secs(10);

async fn create(app: &App, user: u64, name: &str, scopes: &str) -> InteractionReply {
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

fn secret_in(reply: &InteractionReply) -> String {
    token_regex().find(&reply.all_text()).expect("a token in the reply").as_str().to_owned()
}

async fn run(app: &App, user: u64, sub: &str, key: &str) -> (SentInteraction, InteractionReply) {
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
async fn press(app: &App, user: u64, reply: &InteractionReply, which: &str) -> InteractionReply {
    let id = reply.custom_ids().into_iter().find(|c| c.ends_with(which)).expect("the button");
    let message = reply.followups.last().cloned().or(reply.message.clone()).expect("the prompt message");
    let click = app.double.click(ids::DEMO_GUILD_ID, user, &message, &id).await.expect("click");
    app.double
        .wait_for_response_matching(&click, |r| r.components.is_empty() && !r.content.is_empty(), WAIT)
        .await
        .expect("the prompt is answered")
}
