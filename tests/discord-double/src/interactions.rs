//! Playing the user: slash commands ([`SlashBuilder`]), autocomplete, button clicks, each sent
//! as INTERACTION_CREATE with everything serenity 0.12 requires; and Discord's side of the
//! answer: the interaction callback, `@original` edits and follow-ups, merged into an
//! [`InteractionReply`].
//!
//! Fidelity rules enforced here: the command (and subcommand and options) must be registered
//! before a user can use it, a callback is accepted once and only within the ack deadline
//! (3 s), the callback type must suit the interaction, messages must not be empty, and a
//! button can only be clicked on a message the bot posted and that still carries it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use serde_json::{json, Value};

use crate::recorder::{InteractionReply, RecordedMessage, Violation, ViolationKind};
use crate::rest::{is_empty_message, Parts};
use crate::state::{
    authorizing_owners, find_component, without_nulls, ApiError, Callback, Interaction, Message, State,
};
use crate::Inner;

/// An interaction the double sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentInteraction {
    /// Interaction id.
    pub id: u64,
    /// Interaction token.
    pub token: String,
    /// The channel it was used in.
    pub channel_id: u64,
}

/// A message to click on: its id, a [`RecordedMessage`] or an [`InteractionReply`].
#[derive(Clone, Debug)]
pub struct ClickTarget(pub Option<u64>);

impl From<u64> for ClickTarget {
    fn from(id: u64) -> Self {
        ClickTarget(Some(id))
    }
}
impl From<&RecordedMessage> for ClickTarget {
    fn from(m: &RecordedMessage) -> Self {
        ClickTarget(Some(m.id))
    }
}
impl From<&InteractionReply> for ClickTarget {
    fn from(r: &InteractionReply) -> Self {
        ClickTarget(r.message_id)
    }
}

/// Option types (Discord's `ApplicationCommandOptionType`).
mod opt {
    pub const SUB_COMMAND: u64 = 1;
    pub const SUB_COMMAND_GROUP: u64 = 2;
    pub const STRING: u64 = 3;
    pub const INTEGER: u64 = 4;
    pub const BOOLEAN: u64 = 5;
    pub const USER: u64 = 6;
    pub const CHANNEL: u64 = 7;
    pub const ROLE: u64 = 8;
    pub const NUMBER: u64 = 10;
}

/// How long an interaction token may be used (follow-ups, `@original`), from the interaction:
/// Discord's "Interaction tokens are valid for 15 minutes" (receiving-and-responding).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Builds and sends an APPLICATION_COMMAND (or, from [`crate::Double::autocomplete`],
/// APPLICATION_COMMAND_AUTOCOMPLETE) interaction.
#[must_use = "call .send().await"]
pub struct SlashBuilder {
    inner: Arc<Inner>,
    guild_id: Option<u64>,
    user_id: u64,
    autocomplete: bool,
    channel_id: Option<u64>,
    command: Option<String>,
    group: Option<String>,
    subcommand: Option<String>,
    options: Vec<Value>,
    locale: String,
    permissions: Option<u64>,
    enforce_default_permissions: bool,
    registration_wait: Duration,
    unchecked: bool,
}

impl SlashBuilder {
    pub(crate) fn new(inner: Arc<Inner>, guild_id: Option<u64>, user_id: u64, autocomplete: bool) -> Self {
        SlashBuilder {
            inner,
            guild_id,
            user_id,
            autocomplete,
            channel_id: None,
            command: None,
            group: None,
            subcommand: None,
            options: Vec::new(),
            locale: "en-US".into(),
            permissions: None,
            enforce_default_permissions: false,
            registration_wait: Duration::from_secs(10),
            unchecked: false,
        }
    }

    /// The top-level command (e.g. `apikey`) without a subcommand.
    pub fn command(mut self, name: &str) -> Self {
        self.command = Some(name.to_string());
        self
    }

    /// `/command subcommand`, e.g. `.subcommand("apikey", "create")`.
    pub fn subcommand(mut self, command: &str, subcommand: &str) -> Self {
        self.command = Some(command.to_string());
        self.subcommand = Some(subcommand.to_string());
        self
    }

    /// `/command group subcommand`.
    pub fn group(mut self, command: &str, group: &str, subcommand: &str) -> Self {
        self.command = Some(command.to_string());
        self.group = Some(group.to_string());
        self.subcommand = Some(subcommand.to_string());
        self
    }

    fn push(mut self, name: &str, kind: u64, value: Value) -> Self {
        self.options.push(json!({"name": name, "type": kind, "value": value}));
        self
    }

    /// A string option.
    pub fn string(self, name: &str, value: &str) -> Self {
        self.push(name, opt::STRING, json!(value))
    }
    /// An integer option.
    pub fn integer(self, name: &str, value: i64) -> Self {
        self.push(name, opt::INTEGER, json!(value))
    }
    /// A number option.
    pub fn number(self, name: &str, value: f64) -> Self {
        self.push(name, opt::NUMBER, json!(value))
    }
    /// A boolean option.
    pub fn boolean(self, name: &str, value: bool) -> Self {
        self.push(name, opt::BOOLEAN, json!(value))
    }
    /// A channel option (the channel goes into `data.resolved.channels`).
    pub fn channel(self, name: &str, channel_id: u64) -> Self {
        self.push(name, opt::CHANNEL, json!(channel_id.to_string()))
    }
    /// A user option (into `data.resolved.users` and, in a guild, `members`).
    pub fn user(self, name: &str, user_id: u64) -> Self {
        self.push(name, opt::USER, json!(user_id.to_string()))
    }
    /// A role option (into `data.resolved.roles`).
    pub fn role(self, name: &str, role_id: u64) -> Self {
        self.push(name, opt::ROLE, json!(role_id.to_string()))
    }
    /// An option given as text and typed from the command's registration (string, integer,
    /// number, boolean, channel/user/role id), as a user would type it.
    pub fn arg(self, name: &str, value: &str) -> Self {
        self.push(name, 0, json!(value))
    }
    /// The option the user is typing in (autocomplete): `value` is the partial input.
    /// Discord sends focused values as strings whatever the option type.
    pub fn focused(mut self, name: &str, partial: &str) -> Self {
        self.options.push(json!({"name": name, "type": opt::STRING, "value": partial, "focused": true}));
        self
    }
    /// The channel it is used in (default: the guild's first text channel, or the DM).
    pub fn in_channel(mut self, channel_id: u64) -> Self {
        self.channel_id = Some(channel_id);
        self
    }
    /// The user's client locale (default `en-US`).
    pub fn locale(mut self, locale: &str) -> Self {
        self.locale = locale.to_string();
        self
    }
    /// Overrides the member's resolved `permissions` in the payload.
    pub fn permissions(mut self, bits: u64) -> Self {
        self.permissions = Some(bits);
        self
    }
    /// Refuse to send when the member lacks the command's `default_member_permissions` (as
    /// Discord's client would hide the command). Off by default so tests can check that the
    /// bot itself re-checks permissions.
    pub fn enforce_default_permissions(mut self, yes: bool) -> Self {
        self.enforce_default_permissions = yes;
        self
    }
    /// Sends what Discord never would: no wait for the registration and no checks of
    /// subcommands, options or DM availability (`.arg` values stay strings). For testing the
    /// bot's own defences, e.g. a guild-only command arriving from a DM.
    pub fn unchecked(mut self) -> Self {
        self.unchecked = true;
        self
    }
    /// How long `send` waits for the command to be registered (default 10 s).
    pub fn registration_wait(mut self, wait: Duration) -> Self {
        self.registration_wait = wait;
        self
    }

    /// Sends INTERACTION_CREATE. Waits (up to the registration wait) until the command is
    /// registered; fails if it never is, if the subcommand or an option does not exist in the
    /// registration, or if no bot is connected to the gateway.
    pub async fn send(self) -> anyhow::Result<SentInteraction> {
        let name =
            self.command.clone().ok_or_else(|| anyhow!("SlashBuilder: call .command() or .subcommand() first"))?;
        if self.unchecked {
            let found = find_command(&self.inner.state(), self.guild_id, &name);
            let registered = match found {
                Some(cmd) => cmd,
                None => json!({"id": self.inner.state().ids.fresh().to_string(), "name": name, "type": 1}),
            };
            let flat: Vec<Value> = self
                .options
                .iter()
                .map(|o| {
                    let mut o = o.clone();
                    if o["type"] == json!(0) {
                        o["type"] = json!(opt::STRING);
                    }
                    o
                })
                .collect();
            let options = self.wrap(flat.clone());
            let (sent, payload) = {
                let mut st = self.inner.state();
                self.build(&mut st, &registered, &flat, options)?
            };
            deliver(&self.inner, payload, &sent)?;
            return Ok(sent);
        }
        let registered = self
            .inner
            .wait_until(self.registration_wait, || find_command(&self.inner.state(), self.guild_id, &name))
            .await
            .ok_or_else(|| {
                anyhow!(
                    "/{name} is not registered (globally or in guild {:?}) after {:?}; the bot \
                     must register its commands before users can use them",
                    self.guild_id,
                    self.registration_wait
                )
            })?;
        if self.guild_id.is_none() && !usable_in_dm(&registered) {
            bail!("/{name} is registered as guild-only (dm_permission false / contexts without BOT_DM); Discord does not offer it in DMs");
        }
        let (flat, options) = self.check_against(&registered)?;
        let (sent, payload) = {
            let mut st = self.inner.state();
            self.build(&mut st, &registered, &flat, options)?
        };
        deliver(&self.inner, payload, &sent)?;
        Ok(sent)
    }

    /// Checks subcommand and options against the registered command; returns `data.options`.
    fn check_against(&self, cmd: &Value) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
        let name = cmd["name"].as_str().unwrap_or_default();
        let empty = Vec::new();
        let mut defs = cmd["options"].as_array().unwrap_or(&empty);
        let mut path = format!("/{name}");
        if let Some(group) = &self.group {
            let g = defs
                .iter()
                .find(|o| o["name"] == json!(group) && o["type"] == json!(opt::SUB_COMMAND_GROUP))
                .ok_or_else(|| anyhow!("{path} has no subcommand group `{group}`"))?;
            path.push_str(&format!(" {group}"));
            defs = g["options"].as_array().unwrap_or(&empty);
        }
        if let Some(sub) = &self.subcommand {
            let s = defs
                .iter()
                .find(|o| o["name"] == json!(sub) && o["type"] == json!(opt::SUB_COMMAND))
                .ok_or_else(|| anyhow!("{path} has no subcommand `{sub}`"))?;
            path.push_str(&format!(" {sub}"));
            defs = s["options"].as_array().unwrap_or(&empty);
        } else if defs
            .iter()
            .any(|o| matches!(o["type"].as_u64(), Some(opt::SUB_COMMAND) | Some(opt::SUB_COMMAND_GROUP)))
        {
            bail!("{path} has subcommands; use .subcommand()");
        }
        let mut options = Vec::new();
        for given in &self.options {
            let oname = given["name"].as_str().unwrap_or_default();
            let def = defs
                .iter()
                .find(|d| d["name"] == json!(oname))
                .ok_or_else(|| anyhow!("{path} has no option `{oname}`"))?;
            let mut given = given.clone();
            let def_type = def["type"].as_u64().unwrap_or(0);
            if given["type"] == json!(0) {
                let text = given["value"].as_str().unwrap_or_default().to_string();
                let bad = |what: &str| anyhow!("{path} option `{oname}` wants {what}, got {text:?}");
                given["type"] = json!(def_type);
                given["value"] = match def_type {
                    opt::INTEGER => json!(text.parse::<i64>().map_err(|_| bad("an integer"))?),
                    opt::NUMBER => json!(text.parse::<f64>().map_err(|_| bad("a number"))?),
                    opt::BOOLEAN => json!(text.parse::<bool>().map_err(|_| bad("true or false"))?),
                    _ => json!(text),
                };
            }
            if given["focused"] == json!(true) {
                if def["autocomplete"] != json!(true) {
                    bail!("{path} option `{oname}` is not registered with autocomplete");
                }
                given["type"] = json!(def_type);
            } else if given["type"].as_u64() != Some(def_type)
                && !(def_type == opt::NUMBER && given["type"].as_u64() == Some(opt::INTEGER))
            {
                bail!("{path} option `{oname}` is type {def_type}, the test gave type {}", given["type"]);
            }
            if let Some(choices) = def["choices"].as_array().filter(|c| !c.is_empty()) {
                if given["focused"] != json!(true) && !choices.iter().any(|c| c["value"] == given["value"]) {
                    bail!("{path} option `{oname}` must be one of its choices, got {}", given["value"]);
                }
            }
            options.push(given);
        }
        if !self.autocomplete {
            for def in defs {
                let required = def["required"] == json!(true);
                if required && !self.options.iter().any(|o| o["name"] == def["name"]) {
                    bail!("{path} requires option `{}`", def["name"].as_str().unwrap_or_default());
                }
            }
        } else if !options.iter().any(|o| o["focused"] == json!(true)) {
            bail!("an autocomplete interaction needs a .focused(option, partial) option");
        }
        let flat = options.clone();
        Ok((flat, self.wrap(options)))
    }

    /// Wraps options into the subcommand (and group) option, as Discord nests them.
    fn wrap(&self, mut options: Vec<Value>) -> Vec<Value> {
        if let Some(sub) = &self.subcommand {
            options = vec![json!({"name": sub, "type": opt::SUB_COMMAND, "options": options})];
            if let Some(group) = &self.group {
                options = vec![json!({"name": group, "type": opt::SUB_COMMAND_GROUP, "options": options})];
            }
        }
        options
    }

    fn build(
        &self,
        st: &mut State,
        cmd: &Value,
        flat: &[Value],
        options: Vec<Value>,
    ) -> anyhow::Result<(SentInteraction, Value)> {
        let ids = |kind: u64| -> Vec<u64> {
            flat.iter()
                .filter(|o| o["type"] == json!(kind) && o["focused"] != json!(true))
                .filter_map(|o| o["value"].as_str().and_then(|v| v.parse().ok()))
                .collect()
        };
        let (channels, users, roles) = (ids(opt::CHANNEL), ids(opt::USER), ids(opt::ROLE));
        let ctx = context(st, self.guild_id, self.user_id, self.channel_id)?;
        let member_perms = self.permissions.unwrap_or(ctx.member_permissions);
        if self.enforce_default_permissions {
            if let Some(required) = cmd["default_member_permissions"].as_str().and_then(|p| p.parse::<u64>().ok()) {
                if member_perms & required != required && member_perms & crate::config::permissions::ADMINISTRATOR == 0
                {
                    bail!("user {} lacks default_member_permissions {required}", self.user_id);
                }
            }
        }
        let mut resolved = serde_json::Map::new();
        if !channels.is_empty() {
            let mut chans = serde_json::Map::new();
            for c in &channels {
                let (g, ch) = st.channel(*c).ok_or_else(|| anyhow!("channel option: unknown channel {c}"))?;
                let mut v = json!({
                    "id": ch.id.to_string(), "name": ch.name, "type": ch.kind, "guild_id": g.id.to_string(),
                    "position": ch.position, "flags": 0, "parent_id": null, "topic": null, "nsfw": false,
                    "rate_limit_per_user": 0, "last_message_id": null,
                });
                v["permissions"] = json!(member_perms.to_string());
                chans.insert(c.to_string(), v);
            }
            resolved.insert("channels".into(), Value::Object(chans));
        }
        if !users.is_empty() {
            let ids = users;
            let mut users = serde_json::Map::new();
            let mut members = serde_json::Map::new();
            for u in &ids {
                st.user(*u);
                users.insert(u.to_string(), st.user_json(*u));
                if let Some(g) = self.guild_id.and_then(|g| st.guilds.get(&g)) {
                    if let Some(m) = g.members.get(u) {
                        let mut mj = st.member_json(g, m, true);
                        mj.as_object_mut().expect("object").remove("user");
                        members.insert(u.to_string(), mj);
                    }
                }
            }
            resolved.insert("users".into(), Value::Object(users));
            if !members.is_empty() {
                resolved.insert("members".into(), Value::Object(members));
            }
        }
        if !roles.is_empty() {
            let g =
                self.guild_id.and_then(|g| st.guilds.get(&g)).ok_or_else(|| anyhow!("role option outside a guild"))?;
            let mut map = serde_json::Map::new();
            for r in &roles {
                let role = g.roles.get(r).ok_or_else(|| anyhow!("role option: unknown role {r}"))?;
                map.insert(r.to_string(), State::role_json(role));
            }
            resolved.insert("roles".into(), Value::Object(map));
        }
        let mut data = json!({
            "id": cmd["id"],
            "name": cmd["name"],
            "type": cmd["type"].as_u64().unwrap_or(1),
            "options": options,
        });
        if !resolved.is_empty() {
            data["resolved"] = Value::Object(resolved);
        }
        if let Some(g) = cmd.get("guild_id").filter(|g| !g.is_null()) {
            data["guild_id"] = g.clone();
        }
        let kind = if self.autocomplete { 4 } else { 2 };
        let name = cmd["name"].as_str().map(str::to_string);
        Ok(create(st, ctx, kind, name, data, None, &self.locale, self.permissions))
    }
}

/// Where an interaction happens.
struct Context {
    guild_id: Option<u64>,
    channel_id: u64,
    user_id: u64,
    member_permissions: u64,
}

fn context(st: &mut State, guild_id: Option<u64>, user_id: u64, channel: Option<u64>) -> anyhow::Result<Context> {
    match guild_id {
        Some(gid) => {
            let g = st.guilds.get(&gid).ok_or_else(|| anyhow!("unknown guild {gid}"))?;
            let m = g.members.get(&user_id).ok_or_else(|| anyhow!("user {user_id} is not a member of guild {gid}"))?;
            if !g.members.contains_key(&st.bot_user_id) {
                bail!("the bot is not in guild {gid}");
            }
            let channel_id = match channel {
                Some(c) if g.channels.contains_key(&c) => c,
                Some(c) => bail!("channel {c} is not in guild {gid}"),
                None => *g.channels.keys().next().ok_or_else(|| anyhow!("guild {gid} has no channel"))?,
            };
            Ok(Context { guild_id: Some(gid), channel_id, user_id, member_permissions: m.permissions })
        }
        None => {
            st.user(user_id);
            let channel_id = st.dm_channel(user_id);
            Ok(Context { guild_id: None, channel_id, user_id, member_permissions: 0 })
        }
    }
}

/// Builds the INTERACTION_CREATE payload and stores the interaction.
#[allow(clippy::too_many_arguments)]
fn create(
    st: &mut State,
    ctx: Context,
    kind: u8,
    name: Option<String>,
    data: Value,
    message: Option<(u64, Value)>,
    locale: &str,
    permissions: Option<u64>,
) -> (SentInteraction, Value) {
    let id = st.ids.fresh();
    let token = format!("aW50ZXJhY3Rpb246{id}.{}", crate::state::random_hex(48));
    let mut payload = json!({
        "id": id.to_string(),
        "application_id": st.app_id.to_string(),
        "type": kind,
        "data": data,
        "token": token,
        "version": 1,
        "channel_id": ctx.channel_id.to_string(),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": authorizing_owners(ctx.guild_id),
        "attachment_size_limit": 10_485_760,
    });
    match ctx.guild_id.and_then(|g| st.guilds.get(&g)) {
        Some(g) => {
            let m = &g.members[&ctx.user_id];
            let mut member = st.member_json(g, m, true);
            if let Some(p) = permissions {
                member["permissions"] = json!(p.to_string());
            }
            let bot_perms = g.members.get(&st.bot_user_id).map_or(0, |b| b.permissions);
            let ch = &g.channels[&ctx.channel_id];
            let mut channel = State::channel_json(g, ch);
            channel["permissions"] = member["permissions"].clone();
            payload["guild_id"] = json!(g.id.to_string());
            payload["guild"] = json!({"id": g.id.to_string(), "locale": "en-US", "features": []});
            payload["guild_locale"] = json!("en-US");
            payload["member"] = member;
            payload["app_permissions"] = json!(bot_perms.to_string());
            payload["channel"] = channel;
            payload["context"] = json!(0);
        }
        None => {
            payload["user"] = st.user_json(ctx.user_id);
            payload["channel"] = st.dm_channel_json(ctx.channel_id, ctx.user_id);
            payload["app_permissions"] = json!(crate::config::permissions::EVERYONE_DEFAULT.to_string());
            payload["context"] = json!(1);
        }
    }
    let component_message = message.as_ref().map(|(id, _)| *id);
    if let Some((_, msg)) = message {
        payload["message"] = msg;
    }
    st.interactions.insert(
        id,
        Interaction {
            id,
            token: token.clone(),
            kind,
            guild_id: ctx.guild_id,
            channel_id: ctx.channel_id,
            user_id: ctx.user_id,
            name,
            component_message,
            created: st.ids.clock.instant(),
            callback: None,
            original: None,
            followups: Vec::new(),
            payload: payload.clone(),
        },
    );
    (SentInteraction { id, token, channel_id: ctx.channel_id }, payload)
}

/// Dispatches INTERACTION_CREATE; fails when no session got it.
fn deliver(inner: &Inner, payload: Value, sent: &SentInteraction) -> anyhow::Result<()> {
    let n = crate::gateway::dispatch(inner, "INTERACTION_CREATE", payload, None);
    if n == 0 {
        bail!(
            "interaction {} not delivered: no bot session is connected to the gateway \
             (call wait_for_ready first)",
            sent.id
        );
    }
    Ok(())
}

/// A registered chat-input command named `name`: the guild's own first, then global ones.
pub(crate) fn find_command(st: &State, guild_id: Option<u64>, name: &str) -> Option<Value> {
    let is_chat = |c: &&Value| c["name"] == json!(name) && c["type"].as_u64().unwrap_or(1) == 1;
    guild_id
        .and_then(|g| st.guild_commands.get(&g))
        .and_then(|cmds| cmds.iter().find(is_chat))
        .or_else(|| st.global_commands.iter().find(is_chat))
        .cloned()
}

/// Whether a global command may be used in the bot's DM (`dm_permission` not false and,
/// when `contexts` is set, it contains 1 = BOT_DM).
fn usable_in_dm(cmd: &Value) -> bool {
    cmd.get("guild_id").is_none_or(Value::is_null)
        && cmd["dm_permission"] != json!(false)
        && cmd["contexts"].as_array().is_none_or(|ctx| ctx.contains(&json!(1)))
}

/// Clicks a button (see [`crate::Double::click`]).
pub(crate) fn click(
    inner: &Arc<Inner>,
    guild_id: Option<u64>,
    user_id: u64,
    target: ClickTarget,
    custom_id: &str,
) -> anyhow::Result<SentInteraction> {
    let message_id = target.0.ok_or_else(|| anyhow!("click: the reply has no message (was it a message response?)"))?;
    let (sent, payload) = {
        let mut st = inner.state();
        let m = st
            .messages
            .get(&message_id)
            .filter(|m| !m.deleted)
            .ok_or_else(|| anyhow!("click: the bot posted no message {message_id}"))?
            .clone();
        if m.guild_id != guild_id {
            bail!("click: message {message_id} is not in guild {guild_id:?}");
        }
        if m.flags & 64 != 0 {
            let owner = m.interaction_id.and_then(|i| st.interactions.get(&i)).map(|i| i.user_id);
            if owner != Some(user_id) {
                bail!("click: message {message_id} is ephemeral and only visible to {owner:?}");
            }
        }
        let button = find_component(&m.components, custom_id).ok_or_else(|| {
            anyhow!(
                "click: message {message_id} has no component `{custom_id}` (has {:?})",
                crate::state::custom_ids(&m.components)
            )
        })?;
        if button["disabled"] == json!(true) {
            bail!("click: `{custom_id}` on message {message_id} is disabled");
        }
        let component_type = button["type"].as_u64().unwrap_or(2);
        let mut data = json!({"custom_id": custom_id, "component_type": component_type});
        if component_type != 2 {
            data["values"] = json!([]);
        }
        let ctx = context(&mut st, guild_id, user_id, Some(m.channel_id))?;
        let mut msg = st.message_json(&m);
        if let Some(g) = m.guild_id {
            msg["guild_id"] = json!(g.to_string());
        }
        create(&mut st, ctx, 3, None, data, Some((message_id, msg)), "en-US", None)
    };
    deliver(inner, payload, &sent)?;
    Ok(sent)
}

// ----- Discord's side: callback, @original, follow-ups ---------------------------------------

fn protocol(inner: &Inner, op: &str, request: &str, rule: &str, message: String) {
    inner.violation(Violation {
        kind: ViolationKind::Protocol,
        operation_id: op.to_string(),
        request: request.to_string(),
        schema_path: rule.to_string(),
        instance_path: String::new(),
        message,
    });
}

fn check_content(data: &Value, prefix: &str) -> Result<(), ApiError> {
    crate::message_rules::check(data, prefix)
}

/// `POST /interactions/{id}/{token}/callback`.
pub(crate) fn callback(p: Parts<'_>, request: &str) -> Result<(u16, Option<Value>), ApiError> {
    let op = "create_interaction_response";
    let inner = p.inner;
    let id: u64 = p.params["interaction_id"].parse().map_err(|_| ApiError::unknown_interaction())?;
    let token = &p.params["interaction_token"];
    let mut st = inner.state();
    let Some(i) = st.interactions.get(&id).cloned() else {
        return Err(ApiError::unknown_interaction());
    };
    if &i.token != token {
        return Err(ApiError::unknown_interaction());
    }
    if i.callback.is_some() {
        drop(st);
        protocol(
            inner,
            op,
            request,
            "interaction-acknowledged-once",
            format!("interaction {id} was acknowledged twice"),
        );
        return Err(ApiError::already_acknowledged());
    }
    let elapsed = st.ids.clock.instant().saturating_duration_since(i.created);
    if elapsed > inner.cfg.interaction_ack_deadline {
        drop(st);
        protocol(
            inner,
            op,
            request,
            "interaction-ack-deadline",
            format!(
                "interaction {id} acknowledged after {elapsed:?} (deadline {:?})",
                inner.cfg.interaction_ack_deadline
            ),
        );
        return Err(ApiError::unknown_interaction());
    }
    let kind = p.body["type"].as_u64().unwrap_or(0) as u8;
    let allowed: &[u8] = match i.kind {
        2 => &[4, 5, 9],
        3 => &[4, 5, 6, 7, 9],
        4 => &[8],
        5 => &[4, 5, 6, 7],
        _ => &[1],
    };
    if !allowed.contains(&kind) {
        return Err(ApiError::invalid_form(
            "type",
            "INTERACTION_CALLBACK_TYPE_INVALID",
            &format!("Callback type {kind} is not valid for interaction type {}", i.kind),
        ));
    }
    let data = p.body.get("data").cloned().unwrap_or(Value::Null);
    check_content(&data, "data")?;
    let message_kind = if i.kind == 2 { 20 } else { 0 };
    let mut created_message = None;
    let original = match kind {
        4 => {
            if is_empty_message(&data) {
                return Err(ApiError::empty_message());
            }
            let mut body = Value::Object(without_nulls(&data));
            body["flags"] = json!(data["flags"].as_u64().unwrap_or(0) & (64 | 4));
            let mid = st.create_message(i.channel_id, i.guild_id, &body, message_kind, Some(id));
            created_message = Some(mid);
            Some(mid)
        }
        5 => {
            let flags = 128 | (data["flags"].as_u64().unwrap_or(0) & 64);
            let mid = st.create_message(i.channel_id, i.guild_id, &json!({"flags": flags}), message_kind, Some(id));
            Some(mid)
        }
        6 => i.component_message,
        7 => {
            let target = i.component_message.ok_or_else(ApiError::unknown_message)?;
            st.edit_message(target, &Value::Object(without_nulls(&data)))?;
            Some(target)
        }
        _ => None,
    };
    let entry = st.interactions.get_mut(&id).expect("interaction");
    entry.callback = Some(Callback { kind, data: data.clone(), at: SystemTime::now() });
    entry.original = original;
    let with_response = p.query.get("with_response").is_some_and(|v| v == "true" || v == "1");
    let response = with_response.then(|| {
        let msg = original.and_then(|m| st.messages.get(&m));
        let mut interaction = json!({"id": id.to_string(), "type": i.kind});
        if let Some(m) = msg {
            interaction["response_message_id"] = json!(m.id.to_string());
            interaction["response_message_loading"] = json!(m.flags & 128 != 0);
            interaction["response_message_ephemeral"] = json!(m.flags & 64 != 0);
        }
        let mut v = json!({"interaction": interaction});
        if let (Some(m), 4 | 5 | 7) = (msg, kind) {
            v["resource"] = json!({"type": kind, "message": st.message_json(m)});
        } else if matches!(kind, 4..=9) {
            v["resource"] = json!({"type": kind});
        }
        v
    });
    let event = created_message
        .and_then(|m| st.messages.get(&m))
        .filter(|m| m.flags & 64 == 0)
        .map(|m| (st.message_json(m), m.guild_id));
    drop(st);
    if let Some((mut json, guild)) = event {
        if let Some(g) = guild {
            json["guild_id"] = json!(g.to_string());
        }
        let intent = if guild.is_some() {
            crate::gateway::intents::GUILD_MESSAGES
        } else {
            crate::gateway::intents::DIRECT_MESSAGES
        };
        crate::gateway::dispatch(inner, "MESSAGE_CREATE", json, Some(intent));
    }
    inner.bump();
    Ok(match response {
        Some(body) => (200, Some(body)),
        None => (204, None),
    })
}

/// The webhook routes used with an interaction token.
pub(crate) fn webhook(p: Parts<'_>, op: &str) -> Result<(u16, Option<Value>), ApiError> {
    let inner = p.inner;
    let webhook_id: u64 = p.params["webhook_id"].parse().map_err(|_| ApiError::unknown_webhook())?;
    let token = &p.params["webhook_token"];
    let mut st = inner.state();
    if webhook_id != st.app_id {
        return Err(ApiError::unknown_webhook());
    }
    let Some(i) = st.interactions.values().find(|i| &i.token == token).cloned() else {
        return Err(ApiError::invalid_webhook_token());
    };
    // Discord: "Interaction tokens are valid for 15 minutes"; past that the token is unknown.
    if st.ids.clock.instant().saturating_duration_since(i.created) > TOKEN_LIFETIME {
        return Err(ApiError::invalid_webhook_token());
    }
    let body = p.body;
    match op {
        "execute_webhook" => {
            if i.callback.is_none() {
                return Err(ApiError::unknown_webhook());
            }
            if is_empty_message(body) {
                return Err(ApiError::empty_message());
            }
            check_content(body, "")?;
            // The first follow-up after a deferred response replaces the loading message.
            if let Some(orig) = i.original.filter(|o| st.messages.get(o).is_some_and(|m| m.flags & 128 != 0)) {
                st.edit_message(orig, &Value::Object(without_nulls(body)))?;
                let json = st.message_json(&st.messages[&orig]);
                drop(st);
                inner.bump();
                return Ok((200, Some(json)));
            }
            let mut clean = Value::Object(without_nulls(body));
            clean["flags"] = json!(body["flags"].as_u64().unwrap_or(0) & (64 | 4));
            let kind = if i.kind == 2 { 20 } else { 0 };
            let mid = st.create_message(i.channel_id, i.guild_id, &clean, kind, Some(i.id));
            st.interactions.get_mut(&i.id).expect("interaction").followups.push(mid);
            let json = st.message_json(&st.messages[&mid]);
            drop(st);
            inner.bump();
            Ok((200, Some(json)))
        }
        _ => {
            let target = if op.contains("original") {
                i.original.ok_or_else(ApiError::unknown_message)?
            } else {
                let mid: u64 = p.params["message_id"].parse().map_err(|_| ApiError::unknown_message())?;
                if Some(mid) != i.original && !i.followups.contains(&mid) {
                    return Err(ApiError::unknown_message());
                }
                mid
            };
            if st.messages.get(&target).is_none_or(|m| m.deleted) {
                return Err(ApiError::unknown_message());
            }
            match op {
                "get_original_webhook_message" | "get_webhook_message" => {
                    Ok((200, Some(st.message_json(&st.messages[&target]))))
                }
                "update_original_webhook_message" | "update_webhook_message" => {
                    check_content(body, "")?;
                    st.edit_message(target, &Value::Object(without_nulls(body)))?;
                    let json = st.message_json(&st.messages[&target]);
                    drop(st);
                    inner.bump();
                    Ok((200, Some(json)))
                }
                _ => {
                    st.messages.get_mut(&target).expect("message").deleted = true;
                    drop(st);
                    inner.bump();
                    Ok((204, None))
                }
            }
        }
    }
}

// ----- views -------------------------------------------------------------------------------

/// A stored message as the public view.
pub(crate) fn recorded(st: &State, m: &Message) -> RecordedMessage {
    RecordedMessage {
        id: m.id,
        channel_id: m.channel_id,
        guild_id: m.guild_id,
        author_id: m.author_id,
        content: m.content.clone(),
        embeds: m.embeds.clone(),
        components: m.components.clone(),
        flags: m.flags,
        interaction_id: m.interaction_id,
        edited: m.edited_timestamp.is_some(),
        deleted: m.deleted,
        json: st.message_json(m),
    }
}

/// The merged answer to an interaction.
pub(crate) fn reply(st: &State, interaction_id: u64) -> Option<InteractionReply> {
    let i = st.interactions.get(&interaction_id)?;
    let cb = i.callback.as_ref()?;
    let message = i.original.and_then(|m| st.messages.get(&m)).map(|m| recorded(st, m));
    let followups: Vec<RecordedMessage> =
        i.followups.iter().filter_map(|m| st.messages.get(m)).map(|m| recorded(st, m)).collect();
    let edited = match (cb.kind, &message) {
        // For 6/7 the component's message counts as edited once it changed after the click.
        (6, Some(m)) => st.messages.get(&m.id).and_then(|x| x.edited_timestamp.as_ref()).is_some_and(|t| {
            chrono::DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%:z")
                .ok()
                .map(|t| SystemTime::from(t) >= cb.at - Duration::from_millis(1))
                .unwrap_or(true)
        }),
        (_, Some(m)) => m.edited,
        _ => false,
    };
    let (flags, content, embeds, components) = match &message {
        Some(m) => (m.flags, m.content.clone(), m.embeds.clone(), m.components.clone()),
        None => (cb.data["flags"].as_u64().unwrap_or(0), String::new(), vec![], vec![]),
    };
    Some(InteractionReply {
        interaction_id,
        callback_type: cb.kind,
        data: cb.data.clone(),
        flags,
        content,
        embeds,
        components,
        choices: cb.data["choices"].as_array().cloned().unwrap_or_default(),
        message_id: message.as_ref().map(|m| m.id),
        deleted: message.as_ref().is_some_and(|m| m.deleted),
        message,
        followups,
        edited,
    })
}
