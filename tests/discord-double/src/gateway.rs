//! Discord's gateway (v10, JSON text frames, no compression): Hello (op 10), Identify (op 2)
//! → READY + one GUILD_CREATE per guild, Heartbeat (op 1) → ACK (op 11), Resume (op 6) →
//! replay of missed dispatches + RESUMED, and on demand Reconnect (op 7), Invalid Session
//! (op 9), close codes or a dropped connection. Dispatches carry increasing `s` per session and
//! respect the intents given at Identify (privileged intents are refused with close code 4014,
//! as for an app without them enabled) and the bot's permissions where Discord gates an event
//! on them ([`required_permissions`]). An Identify beyond `max_concurrency` gets op 9, a
//! session closed with 4007 or 4009 cannot be resumed, and a guild in an outage is announced
//! with GUILD_DELETE `unavailable: true` (see the crate README's "Gateway rules").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxState;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::recorder::{Direction, GatewayFrame, Violation, ViolationKind};
use crate::Inner;

/// Gateway intent bits.
pub mod intents {
    /// GUILDS.
    pub const GUILDS: u64 = 1 << 0;
    /// GUILD_MEMBERS (privileged).
    pub const GUILD_MEMBERS: u64 = 1 << 1;
    /// GUILD_MODERATION (bans).
    pub const GUILD_MODERATION: u64 = 1 << 2;
    /// GUILD_PRESENCES (privileged).
    pub const GUILD_PRESENCES: u64 = 1 << 8;
    /// GUILD_MESSAGES.
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    /// DIRECT_MESSAGES.
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    /// MESSAGE_CONTENT (privileged): message `content`, `embeds`, `attachments`,
    /// `components` of others' messages, and AutoMod executions' `content`/`matched_content`.
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// AUTO_MODERATION_CONFIGURATION: AUTO_MODERATION_RULE_CREATE/UPDATE/DELETE.
    pub const AUTO_MODERATION_CONFIGURATION: u64 = 1 << 20;
    /// AUTO_MODERATION_EXECUTION: AUTO_MODERATION_ACTION_EXECUTION.
    pub const AUTO_MODERATION_EXECUTION: u64 = 1 << 21;
    /// The privileged ones.
    pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;
}

/// What a connection task is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
    Close(u16, String),
    Drop,
}

/// Gateway counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// WebSocket connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Identify payloads accepted (READY sent).
    pub identifies: u64,
    /// Resumes accepted (RESUMED sent).
    pub resumes: u64,
    /// Resumes refused (op 9 sent).
    pub failed_resumes: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Identifies refused with op 9 because they exceeded `max_concurrency`.
    pub refused_identifies: u64,
    /// Sessions ended by a close code that starts a new session (4007, 4009).
    pub ended_sessions: u64,
    /// Intents of the last Identify.
    pub intents: Option<u64>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    session: Option<String>,
}

struct Session {
    seq: u64,
    intents: u64,
    /// `[id, num_shards]` from Identify; `[0, 1]` when unsharded.
    shard: (u32, u32),
    conn: Option<u64>,
    /// Dispatches sent, for replay on resume: (s, frame).
    sent: Vec<(u64, String)>,
    ready: bool,
}

/// Connections and sessions.
#[derive(Default)]
pub(crate) struct Hub {
    next_conn: u64,
    conns: HashMap<u64, Conn>,
    sessions: HashMap<String, Session>,
    pub stats: GatewayStats,
    /// When true, heartbeats get no ACK (a zombie connection).
    withhold_acks: bool,
    /// The last accepted Identify per rate-limit bucket (`shard_id % max_concurrency`).
    identified_at: HashMap<u32, Instant>,
}

/// How long an Identify occupies its `max_concurrency` bucket. Discord documents 5 s; the
/// double allows 0.5 s less, for the jitter of a client (serenity's shard queuer) that waits
/// exactly 5 s between starts measured from a slightly earlier point than its Identify.
pub const IDENTIFY_WINDOW: Duration = Duration::from_millis(4_500);

/// Close codes after which Discord ends the session ("Reconnect and start a new session"):
/// 4007 Invalid `seq`, 4009 Session timed out. A Resume of such a session gets op 9 `false`.
pub const SESSION_ENDING_CLOSE_CODES: [u16; 2] = [4007, 4009];

/// Which permission (any of the bits) the bot must hold in the event's guild for Discord to
/// send it (gateway-events.mdx): Guild Ban Add/Remove "only sent to bots with the
/// `BAN_MEMBERS` or `VIEW_AUDIT_LOG` permission"; Guild Audit Log Entry Create "only sent to
/// bots with the `VIEW_AUDIT_LOG` permission"; "All Auto Moderation related events are only
/// sent to bot users which have the `MANAGE_GUILD` permission". Administrator holds them all.
pub fn required_permissions(event_name: &str) -> Option<u64> {
    use crate::config::permissions::{BAN_MEMBERS, MANAGE_GUILD, VIEW_AUDIT_LOG};
    match event_name {
        "GUILD_BAN_ADD" | "GUILD_BAN_REMOVE" => Some(BAN_MEMBERS | VIEW_AUDIT_LOG),
        "GUILD_AUDIT_LOG_ENTRY_CREATE" => Some(VIEW_AUDIT_LOG),
        name if name.starts_with("AUTO_MODERATION_") => Some(MANAGE_GUILD),
        _ => None,
    }
}

impl Hub {
    fn acks(&self) -> bool {
        !self.withhold_acks
    }

    /// Whether a session got READY and is connected.
    pub fn ready_connected(&self) -> bool {
        self.sessions.values().any(|s| s.ready && s.conn.is_some())
    }

    /// Whether every shard `0..num_shards` has a ready, connected session identified with
    /// `num_shards` in all.
    pub fn shards_ready(&self, num_shards: u32) -> bool {
        (0..num_shards)
            .all(|id| self.sessions.values().any(|s| s.ready && s.conn.is_some() && s.shard == (id, num_shards)))
    }

    /// Sends `out` to every connection.
    pub fn send_all(&mut self, out: Out) {
        for c in self.conns.values() {
            let msg = match &out {
                Out::Text(t) => Out::Text(t.clone()),
                Out::Close(code, r) => Out::Close(*code, r.clone()),
                Out::Drop => Out::Drop,
            };
            let _ = c.tx.send(msg);
        }
    }

    /// Closes everything (the double is going away).
    pub fn close_all(&mut self) {
        self.send_all(Out::Close(1001, "discord-double stopped".into()));
    }
}

fn record(inner: &Inner, connection: u64, direction: Direction, frame: &Value) {
    let mut d = frame.get("d").cloned().unwrap_or(Value::Null);
    if let Some(token) = d.get_mut("token") {
        *token = json!("<redacted>");
    }
    inner.recorder().frames.push(GatewayFrame {
        connection,
        direction,
        op: frame["op"].as_u64().unwrap_or(255) as u8,
        t: frame["t"].as_str().map(str::to_string),
        s: frame["s"].as_u64(),
        d,
        at: Instant::now(),
    });
}

/// Sends a raw op to one connection and records it.
fn send_to(inner: &Inner, hub: &Hub, conn: u64, frame: Value) {
    if let Some(c) = hub.conns.get(&conn) {
        record(inner, conn, Direction::Sent, &frame);
        let _ = c.tx.send(Out::Text(frame.to_string()));
    }
}

/// Sends op `op` with `d` to every connection.
pub(crate) fn send_op(inner: &Inner, op: u8, d: Value) {
    let hub = inner.hub();
    let conns: Vec<u64> = hub.conns.keys().copied().collect();
    for c in conns {
        send_to(inner, &hub, c, json!({"op": op, "d": d, "s": null, "t": null}));
    }
}

/// Closes every connection with `code`; for a session-ending code
/// ([`SESSION_ENDING_CLOSE_CODES`]) their sessions are forgotten, so a Resume gets op 9.
pub(crate) fn close_all_with(inner: &Inner, code: u16, reason: &str) {
    let mut hub = inner.hub();
    hub.send_all(Out::Close(code, reason.to_string()));
    if SESSION_ENDING_CLOSE_CODES.contains(&code) {
        let ended: Vec<String> = hub.conns.values_mut().filter_map(|c| c.session.take()).collect();
        for sid in ended {
            if hub.sessions.remove(&sid).is_some() {
                hub.stats.ended_sessions += 1;
            }
        }
    }
}

/// Sends op 9 to every connection; non-resumable sessions are forgotten.
pub(crate) fn invalidate_sessions(inner: &Inner, resumable: bool) {
    let mut hub = inner.hub();
    let conns: Vec<u64> = hub.conns.keys().copied().collect();
    for c in conns {
        send_to(inner, &hub, c, json!({"op": 9, "d": resumable, "s": null, "t": null}));
    }
    if !resumable {
        hub.sessions.clear();
        for c in hub.conns.values_mut() {
            c.session = None;
        }
    }
}

/// The guild a dispatch is about: `guild_id`, or a guild object's own `id`.
fn event_guild(name: &str, data: &Value) -> Option<u64> {
    let id =
        if matches!(name, "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE") { &data["id"] } else { &data["guild_id"] };
    id.as_str().and_then(|s| s.parse().ok())
}

/// Sends a dispatch to every session whose intents include `intent` (`None`: always), with
/// the session's next `s`; sessions without a connection keep it for their resume. Returns
/// how many sessions got it.
pub(crate) fn dispatch(inner: &Inner, name: &str, data: Value, intent: Option<u64>) -> usize {
    dispatch_with(inner, name, intent, |_| Some(data.clone()))
}

/// Like [`dispatch`], but the payload depends on the session's Identify intents (e.g. Discord
/// blanks message content for sessions without MESSAGE_CONTENT): `payload(intents)` returns
/// the `d` for that session, or `None` to skip it.
pub(crate) fn dispatch_with(
    inner: &Inner,
    name: &str,
    intent: Option<u64>,
    payload: impl Fn(u64) -> Option<Value>,
) -> usize {
    // Discord's per-guild gates, the same for every session of the app: a guild in an outage
    // sends nothing but its own GUILD_DELETE/GUILD_CREATE, and some events need a permission.
    if let Some(guild_id) = payload(u64::MAX).and_then(|d| event_guild(name, &d)) {
        let st = inner.state();
        if st.unavailable_guilds.contains(&guild_id) && !matches!(name, "GUILD_CREATE" | "GUILD_DELETE") {
            return 0;
        }
        if let Some(needed) = required_permissions(name) {
            if st.bot_permissions(guild_id).map_or(true, |held| held & needed == 0) {
                return 0;
            }
        }
    }
    let bot_id = inner.cfg.bot_user_id.to_string();
    let mut hub = inner.hub();
    let mut frames = Vec::new();
    for session in hub.sessions.values_mut() {
        if !session.ready {
            continue;
        }
        let Some(data) = payload(session.intents) else { continue };
        // "Guild Member Update is sent for current-user updates regardless of whether the
        // GUILD_MEMBERS intent is set" (gateway.mdx, Caveats).
        let about_the_bot = name == "GUILD_MEMBER_UPDATE" && data["user"]["id"].as_str() == Some(bot_id.as_str());
        if intent.is_some_and(|bit| session.intents & bit == 0) && !about_the_bot {
            continue;
        }
        // Discord sends a guild's events to the shard that owns the guild, and the rest (DMs)
        // to shard 0.
        let (id, num_shards) = session.shard;
        match event_guild(name, &data) {
            Some(guild_id) if crate::config::shard_of(guild_id, num_shards) != id => continue,
            None if id != 0 => continue,
            _ => {}
        }
        session.seq += 1;
        let frame = json!({"op": 0, "t": name, "s": session.seq, "d": data});
        let text = frame.to_string();
        session.sent.push((session.seq, text.clone()));
        if session.sent.len() > 2000 {
            session.sent.drain(..1000);
        }
        frames.push((session.conn, frame, text));
    }
    let n = frames.len();
    for (conn, frame, text) in frames {
        if let Some(conn) = conn {
            if let Some(c) = hub.conns.get(&conn) {
                record(inner, conn, Direction::Sent, &frame);
                let _ = c.tx.send(Out::Text(text));
            }
        }
    }
    drop(hub);
    inner.bump();
    n
}

/// `GET /gateway` upgrade.
pub(crate) async fn ws_handler(AxState(inner): AxState<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(4096 * 1024).on_upgrade(move |socket| connection(inner, socket))
}

async fn connection(inner: Arc<Inner>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut hub = inner.hub();
        hub.next_conn += 1;
        let id = hub.next_conn;
        hub.conns.insert(id, Conn { tx: tx.clone(), session: None });
        hub.stats.connections += 1;
        hub.stats.open += 1;
        let hello = json!({"op": 10, "d": {"heartbeat_interval": inner.cfg.heartbeat_interval_ms, "_trace": ["[\"discord-double\"]"]}, "s": null, "t": null});
        send_to(&inner, &hub, id, hello);
        id
    };
    inner.bump();

    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(t)) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
                Some(Out::Drop) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some((code, reason)) = handle_frame(&inner, conn_id, t.as_str()) {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 4002, reason: "Error while decoding payload.".into() }))).await;
                    break;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }

    let mut hub = inner.hub();
    if let Some(conn) = hub.conns.remove(&conn_id) {
        if let Some(sid) = conn.session {
            if let Some(s) = hub.sessions.get_mut(&sid) {
                if s.conn == Some(conn_id) {
                    s.conn = None;
                }
            }
        }
    }
    hub.stats.open = hub.stats.open.saturating_sub(1);
    drop(hub);
    inner.bump();
}

fn protocol_violation(inner: &Inner, rule: &str, message: String) {
    inner.violation(Violation {
        kind: ViolationKind::Protocol,
        operation_id: format!("gateway {rule}"),
        request: "gateway".into(),
        schema_path: rule.to_string(),
        instance_path: String::new(),
        message,
    });
}

fn session_id() -> String {
    crate::state::random_hex(32)
}

/// Handles one frame from the client; `Some((code, reason))` closes the connection.
fn handle_frame(inner: &Arc<Inner>, conn: u64, text: &str) -> Option<(u16, String)> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        protocol_violation(inner, "decode", format!("frame is not JSON: {text:.200}"));
        return Some((4002, "Error while decoding payload.".into()));
    };
    record(inner, conn, Direction::Received, &frame);
    inner.bump();
    let op = frame["op"].as_u64();
    let d = &frame["d"];
    let mut hub = inner.hub();
    let identified = hub.conns.get(&conn).and_then(|c| c.session.clone());
    match op {
        Some(1) => {
            hub.stats.heartbeats += 1;
            if hub.acks() {
                send_to(inner, &hub, conn, json!({"op": 11, "d": null, "s": null, "t": null}));
            }
            None
        }
        Some(2) => {
            if identified.is_some() {
                return Some((4005, "Already authenticated.".into()));
            }
            let token = d["token"].as_str().unwrap_or("");
            let token_ok = match &inner.cfg.bot_token {
                Some(t) => token == t || token == format!("Bot {t}"),
                None => !token.trim().is_empty(),
            };
            if !token_ok {
                return Some((4004, "Authentication failed.".into()));
            }
            let Some(intents) = d["intents"].as_u64() else {
                protocol_violation(inner, "identify", "Identify without `intents`".into());
                return Some((4013, "Invalid intent(s).".into()));
            };
            let refused = intents & intents::PRIVILEGED & !inner.cfg.privileged_intents;
            if refused != 0 {
                drop(hub);
                protocol_violation(
                    inner,
                    "identify",
                    format!(
                        "Identify asks for privileged intents ({refused:#x}) not enabled for the app \
                         (DoubleConfig::privileged_intents)"
                    ),
                );
                return Some((4014, "Disallowed intent(s).".into()));
            }
            let shard = d.get("shard").cloned().filter(|s| !s.is_null());
            let shard_pair = match &shard {
                None => (0, 1),
                Some(v) => match (v[0].as_u64(), v[1].as_u64(), v.as_array().map(Vec::len)) {
                    (Some(id), Some(n), Some(2)) if n >= 1 && id < n && n <= u64::from(u32::MAX) => {
                        (id as u32, n as u32)
                    }
                    _ => return Some((4010, "Invalid shard.".into())),
                },
            };
            if let Some(limit) = inner.cfg.sharding_required_above {
                let owned = inner
                    .state()
                    .guilds
                    .keys()
                    .filter(|g| crate::config::shard_of(**g, shard_pair.1) == shard_pair.0)
                    .count();
                if owned > limit {
                    return Some((4011, "Sharding required.".into()));
                }
            }
            // "If your app exceeds this limit, Discord will respond with a Invalid Session".
            let bucket = shard_pair.0 % inner.cfg.max_concurrency.max(1);
            let now = Instant::now();
            if hub.identified_at.get(&bucket).is_some_and(|at| now.duration_since(*at) < IDENTIFY_WINDOW) {
                hub.stats.refused_identifies += 1;
                send_to(inner, &hub, conn, json!({"op": 9, "d": false, "s": null, "t": null}));
                drop(hub);
                inner.bump();
                return None;
            }
            hub.identified_at.insert(bucket, now);
            let sid = session_id();
            hub.stats.identifies += 1;
            hub.stats.intents = Some(intents);
            if let Some(c) = hub.conns.get_mut(&conn) {
                c.session = Some(sid.clone());
            }
            hub.sessions.insert(
                sid.clone(),
                Session { seq: 0, intents, shard: shard_pair, conn: Some(conn), sent: Vec::new(), ready: false },
            );
            let (ready, guilds) = {
                let st = inner.state();
                let mut ready = json!({
                    "v": 10,
                    "user": {
                        "id": st.bot_user_id.to_string(),
                        "username": inner.cfg.bot_username,
                        "discriminator": "0",
                        "global_name": null,
                        "avatar": null,
                        "avatar_decoration_data": null,
                        "bot": true,
                        "verified": true,
                        "mfa_enabled": false,
                        "email": null,
                        "flags": 0,
                    },
                    "guilds": st
                        .guilds
                        .keys()
                        .filter(|g| crate::config::shard_of(**g, shard_pair.1) == shard_pair.0)
                        .map(|g| json!({"id": g.to_string(), "unavailable": true}))
                        .collect::<Vec<_>>(),
                    "session_id": sid,
                    "session_type": "normal",
                    "resume_gateway_url": inner.gateway_url(),
                    "application": {"id": st.app_id.to_string(), "flags": 0},
                    "private_channels": [],
                    "presences": [],
                    "relationships": [],
                    "guild_join_requests": [],
                    "geo_ordered_rtc_regions": ["local"],
                    "user_settings": {},
                    "_trace": ["[\"discord-double\"]"],
                });
                if let Some(shard) = shard {
                    ready["shard"] = shard;
                }
                // A guild in an outage stays unavailable: "Guilds that are unavailable due to
                // an outage will send a Guild Delete event".
                let guilds: Vec<(&str, Value)> = if intents & intents::GUILDS != 0 {
                    st.guilds
                        .values()
                        .filter(|g| crate::config::shard_of(g.id, shard_pair.1) == shard_pair.0)
                        .map(|g| {
                            if st.unavailable_guilds.contains(&g.id) {
                                ("GUILD_DELETE", json!({"id": g.id.to_string(), "unavailable": true}))
                            } else {
                                ("GUILD_CREATE", st.guild_create_json(g, intents))
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                (ready, guilds)
            };
            let session = hub.sessions.get_mut(&sid).expect("session");
            let mut frames = vec![("READY", ready)];
            frames.extend(guilds);
            let mut out = Vec::new();
            for (t, d) in frames {
                session.seq += 1;
                let frame = json!({"op": 0, "t": t, "s": session.seq, "d": d});
                session.sent.push((session.seq, frame.to_string()));
                out.push(frame);
            }
            session.ready = true;
            for frame in out {
                send_to(inner, &hub, conn, frame);
            }
            drop(hub);
            inner.bump();
            None
        }
        Some(6) => {
            let sid = d["session_id"].as_str().unwrap_or("").to_string();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let Some(session) = hub.sessions.get_mut(&sid) else {
                hub.stats.failed_resumes += 1;
                send_to(inner, &hub, conn, json!({"op": 9, "d": false, "s": null, "t": null}));
                return None;
            };
            let old = session.conn.replace(conn);
            session.seq += 1;
            let resumed = json!({"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["[\"discord-double\"]"]}});
            session.sent.push((session.seq, resumed.to_string()));
            let replay: Vec<Value> = session
                .sent
                .iter()
                .filter(|(s, _)| *s > seq)
                .filter_map(|(_, t)| serde_json::from_str(t).ok())
                .collect();
            hub.stats.resumes += 1;
            if let Some(c) = hub.conns.get_mut(&conn) {
                c.session = Some(sid.clone());
            }
            if let Some(old) = old.filter(|o| *o != conn) {
                if let Some(c) = hub.conns.get_mut(&old) {
                    c.session = None;
                    let _ = c.tx.send(Out::Drop);
                }
            }
            // Missed dispatches in order, RESUMED last (it has the highest `s`).
            for frame in replay {
                send_to(inner, &hub, conn, frame);
            }
            drop(hub);
            inner.bump();
            None
        }
        Some(3) | Some(4) | Some(8) | Some(31) => {
            if identified.is_none() {
                return Some((4003, "Not authenticated.".into()));
            }
            None
        }
        _ => {
            drop(hub);
            protocol_violation(inner, "opcode", format!("unknown opcode in {text:.200}"));
            Some((4001, "Unknown opcode.".into()))
        }
    }
}

impl Hub {
    /// Configures heartbeat ACKs (see [`crate::Double::set_heartbeat_ack`]).
    pub fn set_ack(&mut self, ack: bool) {
        self.withhold_acks = !ack;
    }
}
