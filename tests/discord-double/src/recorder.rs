//! What the double saw and said, for tests to assert on: every REST call ([`RecordedCall`]),
//! every gateway frame ([`GatewayFrame`]), every schema or protocol violation ([`Violation`]),
//! and read-only views of messages ([`RecordedMessage`]) and interaction replies
//! ([`InteractionReply`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::state::{custom_ids, find_component};

/// One REST request the bot sent and the double's answer.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// Order of arrival (0-based).
    pub seq: u64,
    /// Upper-case method.
    pub method: String,
    /// Request path as sent, without the query (e.g. `/api/v10/channels/1/messages`).
    pub path: String,
    /// Raw query string, if any (serenity sends `?&wait=true`-style queries).
    pub query: Option<String>,
    /// Route template without the API prefix, e.g.
    /// `/interactions/{interaction_id}/{interaction_token}/callback`; `None` when unknown.
    pub route: Option<String>,
    /// Discord's operation id, e.g. `create_interaction_response`; `None` when unknown.
    pub operation_id: Option<String>,
    /// Path parameters by name.
    pub params: BTreeMap<String, String>,
    /// Request headers (lower-case names), e.g. `authorization`, `x-audit-log-reason`.
    pub headers: BTreeMap<String, String>,
    /// JSON body (for multipart requests: the `payload_json` part).
    pub body: Option<Value>,
    /// Files uploaded with a multipart request (e.g. `files[0]`), in order.
    pub files: Vec<UploadedFile>,
    /// Status the double answered with.
    pub status: u16,
    /// JSON the double answered with.
    pub response: Option<Value>,
    /// The injected fault that produced the answer, if any.
    pub fault: Option<String>,
    /// Arrival (monotonic).
    pub at: Instant,
    /// Arrival (wall clock).
    pub at_system: SystemTime,
}

/// One file part of a multipart request (an attachment).
#[derive(Clone, Debug)]
pub struct UploadedFile {
    /// The form field, e.g. `files[0]`.
    pub field: String,
    /// The file name the part declares.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if declared.
    pub content_type: Option<String>,
    /// The file's bytes, exactly as sent.
    pub data: Vec<u8>,
}

impl RecordedCall {
    /// `X-Audit-Log-Reason`, percent-decoded.
    pub fn audit_log_reason(&self) -> Option<String> {
        self.headers.get("x-audit-log-reason").map(|r| crate::schema::percent_decode(r))
    }
    /// Whether this call is `method` on `route` (template without `/api/v10`).
    pub fn is(&self, method: &str, route: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.route.as_deref() == Some(route)
    }
    /// A path parameter as a number.
    pub fn param_u64(&self, name: &str) -> Option<u64> {
        self.params.get(name).and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for RecordedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} -> {} ({})",
            self.seq,
            self.method,
            self.path,
            self.status,
            self.operation_id.as_deref().unwrap_or("unknown operation")
        )?;
        if let Some(fault) = &self.fault {
            write!(f, " [fault: {fault}]")?;
        }
        Ok(())
    }
}

/// What kind of rule was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// The bot's request body does not match the operation's request schema.
    Request,
    /// The double's own response does not match the operation's response schema (a double bug).
    Response,
    /// The bot called a path/method Discord does not have (or the double does not implement).
    UnknownOperation,
    /// Discord's rules outside the schema: answering an interaction twice or late, bad headers.
    Protocol,
}

/// A schema or protocol violation.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Kind.
    pub kind: ViolationKind,
    /// Operation id (or `METHOD path` when unknown).
    pub operation_id: String,
    /// The request (`METHOD path`).
    pub request: String,
    /// Location in the OpenAPI document (or the rule's name for protocol violations).
    pub schema_path: String,
    /// Location in the JSON document (JSON pointer).
    pub instance_path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {} ({}): {}", self.kind, self.operation_id, self.request, self.message)?;
        if !self.instance_path.is_empty() {
            write!(f, " at {}", self.instance_path)?;
        }
        if !self.schema_path.is_empty() {
            write!(f, " (schema {})", self.schema_path)?;
        }
        Ok(())
    }
}

/// Direction of a gateway frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Double → bot.
    Sent,
    /// Bot → double.
    Received,
}

/// One gateway frame.
#[derive(Clone, Debug)]
pub struct GatewayFrame {
    /// Connection number (1-based, in order of connection).
    pub connection: u64,
    /// Direction.
    pub direction: Direction,
    /// Opcode.
    pub op: u8,
    /// Event name (dispatches).
    pub t: Option<String>,
    /// Sequence number (dispatches).
    pub s: Option<u64>,
    /// Payload (`d`); an Identify/Resume token is replaced by `"<redacted>"`.
    pub d: Value,
    /// When.
    pub at: Instant,
}

/// A message the bot created, as it is now (after edits).
#[derive(Clone, Debug)]
pub struct RecordedMessage {
    /// Id.
    pub id: u64,
    /// Channel.
    pub channel_id: u64,
    /// Guild, if any.
    pub guild_id: Option<u64>,
    /// Author.
    pub author_id: u64,
    /// Text.
    pub content: String,
    /// Embeds.
    pub embeds: Vec<Value>,
    /// Components.
    pub components: Vec<Value>,
    /// Flags (64 = ephemeral).
    pub flags: u64,
    /// The interaction it answers, if any.
    pub interaction_id: Option<u64>,
    /// Edited at least once.
    pub edited: bool,
    /// Deleted.
    pub deleted: bool,
    /// The full message object as Discord would return it.
    pub json: Value,
}

impl RecordedMessage {
    /// Only the invoking user sees it.
    pub fn ephemeral(&self) -> bool {
        self.flags & 64 != 0
    }
    /// Content plus every embed's title, description, fields, author and footer, one per
    /// line: what a reader sees, for `contains` assertions.
    pub fn text(&self) -> String {
        visible_text(&self.content, &self.embeds)
    }
    /// Every button/select `custom_id`.
    pub fn custom_ids(&self) -> Vec<String> {
        custom_ids(&self.components)
    }
    /// The component with `custom_id`.
    pub fn component(&self, custom_id: &str) -> Option<&Value> {
        find_component(&self.components, custom_id)
    }
}

/// What the bot answered to an interaction: the callback, merged with later edits of
/// `@original` (or, for components, of the message the component is on) and follow-ups.
#[derive(Clone, Debug)]
pub struct InteractionReply {
    /// The interaction.
    pub interaction_id: u64,
    /// Callback type (4 message, 5 deferred, 6 deferred update, 7 update, 8 autocomplete
    /// result, 9 modal).
    pub callback_type: u8,
    /// The callback's `data` as sent.
    pub data: Value,
    /// Flags of the visible message (64 = ephemeral); for 6/7 the updated message's.
    pub flags: u64,
    /// Visible content now.
    pub content: String,
    /// Visible embeds now.
    pub embeds: Vec<Value>,
    /// Visible components now.
    pub components: Vec<Value>,
    /// Autocomplete choices (type 8).
    pub choices: Vec<Value>,
    /// The message `@original` refers to, if any.
    pub message_id: Option<u64>,
    /// That message, as it is now.
    pub message: Option<RecordedMessage>,
    /// Follow-up messages, oldest first.
    pub followups: Vec<RecordedMessage>,
    /// Whether `@original` was edited after the callback.
    pub edited: bool,
    /// Whether `@original` was deleted.
    pub deleted: bool,
}

impl InteractionReply {
    /// Only the invoking user sees the reply.
    pub fn ephemeral(&self) -> bool {
        self.flags & 64 != 0
    }
    /// Content plus embed text of the reply (not the follow-ups).
    pub fn text(&self) -> String {
        visible_text(&self.content, &self.embeds)
    }
    /// Text of the reply and every follow-up.
    pub fn all_text(&self) -> String {
        let mut t = self.text();
        for f in &self.followups {
            t.push('\n');
            t.push_str(&f.text());
        }
        t
    }
    /// Every `custom_id` in the reply's components.
    pub fn custom_ids(&self) -> Vec<String> {
        custom_ids(&self.components)
    }
    /// Autocomplete choice names.
    pub fn choice_names(&self) -> Vec<String> {
        self.choices.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
    }
    /// Autocomplete choice values, as strings.
    pub fn choice_values(&self) -> Vec<String> {
        self.choices
            .iter()
            .map(|c| match &c["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }
    /// Whether something is visible (a deferred response counts once edited or followed up).
    pub fn is_visible(&self) -> bool {
        match self.callback_type {
            5 | 6 => self.edited || !self.followups.is_empty(),
            _ => true,
        }
    }
}

/// Content and embed text, one item per line.
pub fn visible_text(content: &str, embeds: &[Value]) -> String {
    let mut out = vec![content.to_string()];
    for e in embeds {
        for key in ["title", "description"] {
            if let Some(s) = e[key].as_str() {
                out.push(s.to_string());
            }
        }
        if let Some(s) = e["author"]["name"].as_str() {
            out.push(s.to_string());
        }
        if let Some(fields) = e["fields"].as_array() {
            for f in fields {
                out.push(format!(
                    "{}: {}",
                    f["name"].as_str().unwrap_or_default(),
                    f["value"].as_str().unwrap_or_default()
                ));
            }
        }
        if let Some(s) = e["footer"]["text"].as_str() {
            out.push(s.to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out.join("\n")
}

/// The log itself.
#[derive(Default)]
pub struct Recorder {
    /// REST calls.
    pub calls: Vec<RecordedCall>,
    /// Violations.
    pub violations: Vec<Violation>,
    /// Gateway frames.
    pub frames: Vec<GatewayFrame>,
}
