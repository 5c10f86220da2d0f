//! The Discord bot, end to end: the real binary's serenity/poise client
//! connected to the Discord double, driven by INTERACTION_CREATE events,
//! judged by the REST calls it makes (validated against Discord's OpenAPI
//! description) and by the HTTP listener's answers.

use crate::support;

use std::time::{Duration, Instant};

use discord_double::{DoubleConfig, FaultRule, InteractionReply};
use support::bot::{create, press, run, secret_in, WAIT};
use support::{ids, json, spawn_against, spawn_app, spawn_app_with, token_regex, App, Options, BOT_TOKEN};

mod audit_channel;
mod commands;
mod gateway;
mod leak_guard;
mod makers;
mod messages;
mod registration;
mod reminders;
mod slow_work;
