//! Discord's REST API under `/api/v10`: routing by Discord's own path templates and operation
//! ids, request/response validation, fault injection, recording, and the handlers that act on
//! [`crate::state::State`] with Discord's status codes and error JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::faults::FaultRequest;
use crate::gateway::{self, intents};
use crate::recorder::{RecordedCall, UploadedFile, Violation, ViolationKind};
use crate::schema::{match_route, RouteTemplate};
use crate::state::{without_nulls, ApiError, State};
use crate::Inner;

const API_PREFIX: &str = "/api/v10";

/// Every operation the double implements: (method, template, operation id). Templates and
/// ids are Discord's (see `openapi.json`); a test checks they exist there.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/gateway", "get_gateway"),
    ("GET", "/gateway/bot", "get_bot_gateway"),
    ("GET", "/users/@me", "get_my_user"),
    ("GET", "/users/{user_id}", "get_user"),
    ("GET", "/oauth2/applications/@me", "get_my_oauth2_application"),
    ("GET", "/applications/@me", "get_my_application"),
    ("GET", "/applications/{application_id}/commands", "list_application_commands"),
    ("PUT", "/applications/{application_id}/commands", "bulk_set_application_commands"),
    ("POST", "/applications/{application_id}/commands", "create_application_command"),
    ("GET", "/applications/{application_id}/commands/{command_id}", "get_application_command"),
    ("DELETE", "/applications/{application_id}/commands/{command_id}", "delete_application_command"),
    ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "list_guild_application_commands"),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "bulk_set_guild_application_commands"),
    ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", "create_guild_application_command"),
    ("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}", "get_guild_application_command"),
    (
        "DELETE",
        "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
        "delete_guild_application_command",
    ),
    ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", "create_interaction_response"),
    ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "get_original_webhook_message"),
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "update_original_webhook_message"),
    ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "delete_original_webhook_message"),
    ("POST", "/webhooks/{webhook_id}/{webhook_token}", "execute_webhook"),
    ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "get_webhook_message"),
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "update_webhook_message"),
    ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "delete_webhook_message"),
    ("GET", "/channels/{channel_id}", "get_channel"),
    ("GET", "/channels/{channel_id}/messages", "list_messages"),
    ("POST", "/channels/{channel_id}/messages", "create_message"),
    ("GET", "/channels/{channel_id}/messages/{message_id}", "get_message"),
    ("GET", "/guilds/{guild_id}", "get_guild"),
    ("GET", "/guilds/{guild_id}/channels", "list_guild_channels"),
    ("GET", "/guilds/{guild_id}/roles", "list_guild_roles"),
    ("GET", "/guilds/{guild_id}/members/{user_id}", "get_guild_member"),
    ("DELETE", "/guilds/{guild_id}/members/{user_id}", "delete_guild_member"),
    ("GET", "/guilds/{guild_id}/bans", "list_guild_bans"),
    ("GET", "/guilds/{guild_id}/bans/{user_id}", "get_guild_ban"),
    ("PUT", "/guilds/{guild_id}/bans/{user_id}", "ban_user_from_guild"),
    ("DELETE", "/guilds/{guild_id}/bans/{user_id}", "unban_user_from_guild"),
    ("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", "add_guild_member_role"),
    ("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", "delete_guild_member_role"),
    ("GET", "/guilds/{guild_id}/auto-moderation/rules", "list_auto_moderation_rules"),
    ("POST", "/guilds/{guild_id}/auto-moderation/rules", "create_auto_moderation_rule"),
    ("GET", "/guilds/{guild_id}/auto-moderation/rules/{rule_id}", "get_auto_moderation_rule"),
    ("PATCH", "/guilds/{guild_id}/auto-moderation/rules/{rule_id}", "update_auto_moderation_rule"),
    ("DELETE", "/guilds/{guild_id}/auto-moderation/rules/{rule_id}", "delete_auto_moderation_rule"),
];

/// The implemented routes as templates.
pub(crate) fn implemented_routes() -> Vec<RouteTemplate> {
    ROUTES.iter().map(|(m, t, id)| RouteTemplate::new(m, t, id, String::new())).collect()
}

/// The HTTP app: the gateway's WebSocket at `/gateway`, everything else is REST.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().route("/gateway", get(gateway::ws_handler)).fallback(rest_handler).with_state(inner)
}

/// A handler's success: status and optional JSON body.
struct Reply {
    status: u16,
    body: Option<Value>,
}

fn ok(body: Value) -> Result<Reply, ApiError> {
    Ok(Reply { status: 200, body: Some(body) })
}

fn no_content() -> Result<Reply, ApiError> {
    Ok(Reply { status: 204, body: None })
}

/// What a handler gets.
struct Ctx<'a> {
    inner: &'a Inner,
    params: &'a HashMap<String, String>,
    query: HashMap<String, String>,
    headers: &'a BTreeMap<String, String>,
    body: Option<&'a Value>,
}

impl Ctx<'_> {
    /// A snowflake path parameter (400 50035 when not a number, like Discord).
    fn id(&self, name: &str) -> Result<u64, ApiError> {
        let raw = self.params.get(name).map(String::as_str).unwrap_or("");
        raw.parse::<u64>().map_err(|_| {
            ApiError::invalid_form(name, "NUMBER_TYPE_COERCE", &format!("Value \"{raw}\" is not snowflake."))
        })
    }
    fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
    fn body(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.body.unwrap_or(&NULL)
    }
    fn reason(&self) -> Option<String> {
        self.headers.get("x-audit-log-reason").map(|r| crate::schema::percent_decode(r))
    }
    fn query_bool(&self, name: &str) -> bool {
        self.query.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (crate::schema::percent_decode(k), crate::schema::percent_decode(v)),
            None => (crate::schema::percent_decode(p), String::new()),
        })
        .collect()
}

/// A multipart body (serenity sends one with attachments): its
/// `payload_json` part and its files; `None` when the body is not valid
/// multipart.
async fn multipart_parts(content_type: &str, body: &[u8]) -> Option<(Option<Value>, Vec<UploadedFile>)> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let chunk = axum::body::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(chunk) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let (mut payload, mut files) = (None, Vec::new());
    while let Some(part) = parts.next_field().await.ok()? {
        let field = part.name().unwrap_or_default().to_owned();
        let filename = part.file_name().map(str::to_owned);
        let content_type = part.content_type().map(|m| m.to_string());
        let data = part.bytes().await.ok()?;
        if field == "payload_json" {
            payload = serde_json::from_slice(&data).ok();
        } else {
            files.push(UploadedFile { field, filename, content_type, data: data.to_vec() });
        }
    }
    Some((payload, files))
}

/// The outcome of one request, before it is recorded.
struct Outcome {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    route: Option<String>,
    operation_id: Option<String>,
    params: HashMap<String, String>,
    request_body: Option<Value>,
    files: Vec<UploadedFile>,
    fault: Option<String>,
}

async fn rest_handler(AxState(inner): AxState<Arc<Inner>>, req: Request) -> Response {
    /// Counts the request as in flight until it is recorded (also if the client goes away).
    struct InFlight<'a>(&'a Inner);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            self.0.bump();
        }
    }
    inner.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let in_flight = InFlight(&inner);
    let at = Instant::now();
    let at_system = SystemTime::now();
    let method = req.method().as_str().to_ascii_uppercase();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await.unwrap_or_default();

    let out = process(&inner, &method, &path, query.as_deref(), &headers, &bytes).await;

    let call = {
        let mut rec = inner.recorder();
        let call = RecordedCall {
            seq: rec.calls.len() as u64,
            method,
            path,
            query,
            route: out.route,
            operation_id: out.operation_id,
            params: out.params.into_iter().collect(),
            headers,
            body: out.request_body,
            files: out.files,
            status: out.status,
            response: out.body.clone(),
            fault: out.fault,
            at,
            at_system,
        };
        rec.calls.push(call.clone());
        call
    };
    tracing::debug!(target: "discord_double", "{call}");
    drop(in_flight);

    let mut resp = match &out.body {
        Some(b) => (
            StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            b.to_string(),
        )
            .into_response(),
        None => Response::builder().status(out.status).body(Body::empty()).expect("response"),
    };
    let h = resp.headers_mut();
    for (k, v) in &out.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    resp
}

fn not_found() -> Value {
    json!({"code": 0, "message": "404: Not Found"})
}

/// Operations whose spec `security` includes `{}`: the gateway URL, and those that
/// authenticate with the interaction/webhook token in the path instead of the bot token.
fn auth_optional(operation_id: &str) -> bool {
    operation_id == "get_gateway"
        || operation_id == "create_interaction_response"
        || operation_id == "execute_webhook"
        || operation_id.contains("webhook_message")
}

async fn process(
    inner: &Inner,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &BTreeMap<String, String>,
    bytes: &[u8],
) -> Outcome {
    let mut out = Outcome {
        status: 404,
        body: Some(not_found()),
        headers: vec![],
        route: None,
        operation_id: None,
        params: HashMap::new(),
        request_body: None,
        files: Vec::new(),
        fault: None,
    };
    let request = format!("{method} {path}");
    let protocol = |operation_id: &str, rule: &str, message: String| Violation {
        kind: ViolationKind::Protocol,
        operation_id: operation_id.to_string(),
        request: request.clone(),
        schema_path: rule.to_string(),
        instance_path: String::new(),
        message,
    };

    // Body: JSON, or the payload_json part of a multipart body.
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let mut bad_json = false;
    if !bytes.is_empty() {
        if content_type.starts_with("multipart/form-data") {
            match multipart_parts(&content_type, bytes).await {
                Some((payload, files)) => (out.request_body, out.files) = (payload, files),
                None => bad_json = true,
            }
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => out.request_body = Some(v),
                Err(_) => bad_json = true,
            }
        }
    }

    // Route.
    let Some(api_path) = path.strip_prefix(API_PREFIX).filter(|p| p.starts_with('/')) else {
        inner.violation(Violation {
            kind: ViolationKind::UnknownOperation,
            operation_id: request.clone(),
            request: request.clone(),
            schema_path: String::new(),
            instance_path: String::new(),
            message: format!("not under {API_PREFIX} (the bot must use API v10)"),
        });
        return out;
    };
    let Some((route, params)) = match_route(&inner.routes, method, api_path) else {
        let spec_op = inner.spec.and_then(|s| s.find_operation(method, api_path));
        let other_method = inner
            .routes
            .iter()
            .chain(inner.spec.map(|s| s.routes()).unwrap_or(&[]))
            .any(|r| match_route(std::slice::from_ref(r), &r.method, api_path).is_some());
        let message = match spec_op {
            Some(op) => format!(
                "Discord operation {} ({} {}) is not implemented by the double",
                op.operation_id, op.method, op.template
            ),
            None if other_method => format!("{method} is not allowed on {api_path}"),
            None => format!("unknown operation: Discord has no {method} {api_path}"),
        };
        if other_method && spec_op.is_none() {
            out.status = 405;
            out.body = Some(json!({"code": 0, "message": "405: Method Not Allowed"}));
        }
        out.operation_id = spec_op.map(|o| o.operation_id.clone());
        out.route = spec_op.map(|o| o.template.clone());
        inner.violation(Violation {
            kind: ViolationKind::UnknownOperation,
            operation_id: spec_op.map_or_else(|| request.clone(), |o| o.operation_id.clone()),
            request: request.clone(),
            schema_path: String::new(),
            instance_path: String::new(),
            message,
        });
        return out;
    };
    let op_id = route.operation_id.clone();
    out.route = Some(route.template.clone());
    out.operation_id = Some(op_id.clone());
    out.params = params;

    if bad_json {
        inner.violation(Violation {
            kind: ViolationKind::Request,
            operation_id: op_id.clone(),
            request: request.clone(),
            schema_path: "requestBody".into(),
            instance_path: String::new(),
            message: "request body is not valid JSON".into(),
        });
        out.status = 400;
        out.body = Some(json!({"code": 50109, "message": "The request body contains invalid JSON."}));
        return out;
    }

    // Request validation.
    if let (Some(spec), Some(body)) = (inner.spec, out.request_body.as_ref()) {
        for e in spec.validate_request(&op_id, body) {
            inner.violation(Violation {
                kind: ViolationKind::Request,
                operation_id: op_id.clone(),
                request: request.clone(),
                schema_path: e.schema_path,
                instance_path: e.instance_path,
                message: e.message,
            });
        }
    }
    if let Some(reason) = headers.get("x-audit-log-reason") {
        let decoded = crate::schema::percent_decode(reason);
        let len = decoded.chars().count();
        if len == 0 || len > 512 {
            inner.violation(protocol(
                &op_id,
                "X-Audit-Log-Reason",
                format!("X-Audit-Log-Reason must be 1-512 characters, got {len}"),
            ));
        }
    }

    // Rate limits: the global limit, then the route's bucket.
    let verdict = inner.rate_limiter.lock().unwrap_or_else(|e| e.into_inner()).check(
        &inner.cfg.rate_limits,
        headers.get("authorization").map_or("", String::as_str),
        method,
        &route.template,
        &out.params,
        Instant::now(),
    );
    match verdict {
        crate::ratelimit::Verdict::Pass(h) => out.headers = h,
        crate::ratelimit::Verdict::Limited { body, headers } => {
            out.status = 429;
            out.body = Some(body);
            out.headers = headers;
            out.fault = Some("rate limited (the double's buckets)".into());
            return out;
        }
    }

    // Faults.
    let action = inner.faults.lock().unwrap_or_else(|e| e.into_inner()).take(&FaultRequest {
        method,
        path: api_path,
        route: out.route.as_deref(),
        operation_id: Some(&op_id),
        body: out.request_body.as_ref(),
    });
    if let Some(action) = action {
        if let Some(latency) = action.latency {
            tokio::time::sleep(latency).await;
        }
        if let Some(resp) = action.response {
            out.status = resp.status;
            out.body = Some(resp.body);
            out.headers.extend(resp.headers);
            out.fault = Some(action.description);
            validate_response(inner, &op_id, &request, out.status, out.body.as_ref());
            return out;
        }
    }

    // Authentication.
    if !auth_optional(&op_id) {
        let auth = headers.get("authorization").map(String::as_str).unwrap_or("");
        let valid = match &inner.cfg.bot_token {
            Some(token) => auth == format!("Bot {token}"),
            None => auth.strip_prefix("Bot ").is_some_and(|t| !t.trim().is_empty()),
        };
        if !valid {
            out.status = 401;
            out.body = Some(json!({"code": 0, "message": "401: Unauthorized"}));
            inner.violation(protocol(
                &op_id,
                "Authorization",
                "missing or invalid `Authorization: Bot <token>` header".into(),
            ));
            return out;
        }
    }

    let ctx = Ctx { inner, params: &out.params, query: parse_query(query), headers, body: out.request_body.as_ref() };
    let result = handle(&ctx, &op_id, &request);
    let (status, body) = match result {
        Ok(r) => (r.status, r.body),
        Err(e) => (e.status, Some(e.body())),
    };
    out.status = status;
    out.body = body;
    validate_response(inner, &op_id, &request, out.status, out.body.as_ref());
    out
}

fn validate_response(inner: &Inner, op_id: &str, request: &str, status: u16, body: Option<&Value>) {
    let Some(spec) = inner.spec else { return };
    for e in spec.validate_response(op_id, status, body) {
        inner.violation(Violation {
            kind: ViolationKind::Response,
            operation_id: op_id.to_string(),
            request: request.to_string(),
            schema_path: e.schema_path,
            instance_path: e.instance_path,
            message: e.message,
        });
    }
}

fn handle(ctx: &Ctx<'_>, op_id: &str, request: &str) -> Result<Reply, ApiError> {
    let inner = ctx.inner;
    match op_id {
        "get_gateway" => ok(json!({"url": inner.gateway_url()})),
        "get_bot_gateway" => ok(json!({
            "url": inner.gateway_url(),
            "shards": inner.cfg.recommended_shards.max(1),
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": inner.cfg.max_concurrency.max(1)},
        })),
        "get_my_user" => ok(inner.state().me_json()),
        "get_user" => {
            let id = ctx.id("user_id")?;
            let st = inner.state();
            if st.users.contains_key(&id) {
                ok(st.user_json(id))
            } else {
                Err(ApiError::unknown_user())
            }
        }
        "get_my_oauth2_application" | "get_my_application" => ok(application_json(inner)),
        "list_application_commands"
        | "bulk_set_application_commands"
        | "create_application_command"
        | "get_application_command"
        | "delete_application_command"
        | "list_guild_application_commands"
        | "bulk_set_guild_application_commands"
        | "create_guild_application_command"
        | "get_guild_application_command"
        | "delete_guild_application_command" => commands(ctx, op_id),
        "create_interaction_response" => {
            crate::interactions::callback(ctx_parts(ctx), request).map(|(status, body)| Reply { status, body })
        }
        "get_original_webhook_message"
        | "update_original_webhook_message"
        | "delete_original_webhook_message"
        | "execute_webhook"
        | "get_webhook_message"
        | "update_webhook_message"
        | "delete_webhook_message" => {
            crate::interactions::webhook(ctx_parts(ctx), op_id).map(|(status, body)| Reply { status, body })
        }
        "get_channel" => {
            let id = ctx.id("channel_id")?;
            let st = inner.state();
            if let Some((g, c)) = st.channel(id) {
                return ok(State::channel_json(g, c));
            }
            st.dm_user(id).map_or_else(|| Err(ApiError::unknown_channel()), |user| ok(st.dm_channel_json(id, user)))
        }
        "list_messages" => {
            let id = ctx.id("channel_id")?;
            let st = inner.state();
            if st.channel(id).is_none() && st.dm_user(id).is_none() {
                return Err(ApiError::unknown_channel());
            }
            let limit = ctx.query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50).clamp(1, 100);
            let list: Vec<Value> = st
                .messages
                .values()
                .rev()
                .filter(|m| m.channel_id == id && !m.deleted && m.flags & 64 == 0)
                .take(limit)
                .map(|m| st.message_json(m))
                .collect();
            ok(Value::Array(list))
        }
        "get_message" => {
            let channel = ctx.id("channel_id")?;
            let id = ctx.id("message_id")?;
            let st = inner.state();
            if st.channel(channel).is_none() && st.dm_user(channel).is_none() {
                return Err(ApiError::unknown_channel());
            }
            st.messages
                .get(&id)
                .filter(|m| m.channel_id == channel && !m.deleted && m.flags & 64 == 0)
                .map(|m| st.message_json(m))
                .map_or_else(|| Err(ApiError::unknown_message()), ok)
        }
        "create_message" => create_message(ctx),
        "get_guild" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            // As on Discord: a bot reads only guilds it is in.
            if !g.members.contains_key(&st.bot_user_id) {
                return Err(ApiError::missing_access());
            }
            ok(st.guild_json(g, ctx.query_bool("with_counts")))
        }
        "list_guild_channels" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            ok(json!(g.channels.values().map(|c| State::channel_json(g, c)).collect::<Vec<_>>()))
        }
        "list_guild_roles" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            ok(json!(g.roles.values().map(State::role_json).collect::<Vec<_>>()))
        }
        "get_guild_member" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            let m = g.members.get(&ctx.id("user_id")?).ok_or_else(ApiError::unknown_member)?;
            ok(st.member_json(g, m, false))
        }
        "delete_guild_member" => kick(ctx),
        "list_guild_bans" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            require(&st, g.id, crate::config::permissions::BAN_MEMBERS)?;
            // Discord's paging: `limit` 1..=1000 (default 1000), users after `after` or before
            // `before` (the nearest ones), ascending by id either way.
            let limit = match ctx.query.get("limit") {
                None => 1000,
                Some(raw) => match raw.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => {
                        return Err(ApiError::invalid_form(
                            "limit",
                            "NUMBER_TYPE_MAX",
                            "int value should be less than or equal to 1000.",
                        ))
                    }
                },
            };
            let bound = |name: &str| -> Result<Option<u64>, ApiError> {
                match ctx.query.get(name) {
                    None => Ok(None),
                    Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| {
                        ApiError::invalid_form(
                            name,
                            "NUMBER_TYPE_COERCE",
                            &format!("Value \"{raw}\" is not snowflake."),
                        )
                    }),
                }
            };
            let (after, before) = (bound("after")?, bound("before")?);
            let page: Vec<(&u64, &Option<String>)> = match (after, before) {
                (None, Some(before)) => {
                    let mut back: Vec<_> = g.bans.range(..before).rev().take(limit).collect();
                    back.reverse();
                    back
                }
                (after, before) => g
                    .bans
                    .range((
                        after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(u, _)| before.is_none_or(|b| **u < b))
                    .take(limit)
                    .collect(),
            };
            ok(json!(page.into_iter().map(|(u, r)| json!({"user": st.user_json(*u), "reason": r})).collect::<Vec<_>>()))
        }
        "get_guild_ban" => {
            let st = inner.state();
            let g = st.guild(ctx.id("guild_id")?)?;
            require(&st, g.id, crate::config::permissions::BAN_MEMBERS)?;
            let user = ctx.id("user_id")?;
            let reason = g.bans.get(&user).ok_or_else(ApiError::unknown_ban)?;
            ok(json!({"user": st.user_json(user), "reason": reason}))
        }
        "ban_user_from_guild" => ban(ctx),
        "unban_user_from_guild" => unban(ctx),
        "add_guild_member_role" | "delete_guild_member_role" => member_role(ctx, op_id == "add_guild_member_role"),
        "list_auto_moderation_rules"
        | "create_auto_moderation_rule"
        | "get_auto_moderation_rule"
        | "update_auto_moderation_rule"
        | "delete_auto_moderation_rule" => {
            crate::automod::handle(ctx_parts(ctx), op_id).map(|(status, body)| Reply { status, body })
        }
        other => Err(ApiError::new(501, 0, &format!("discord-double: {other} is routed but has no handler"))),
    }
}

/// The handler context as the interactions module sees it.
pub(crate) struct Parts<'a> {
    pub inner: &'a Inner,
    pub params: &'a HashMap<String, String>,
    pub query: &'a HashMap<String, String>,
    pub body: &'a Value,
}

fn ctx_parts<'a>(ctx: &'a Ctx<'a>) -> Parts<'a> {
    Parts { inner: ctx.inner, params: ctx.params, query: &ctx.query, body: ctx.body() }
}

/// 50013 unless the bot has `bits` in the guild.
fn require(st: &State, guild_id: u64, bits: u64) -> Result<(), ApiError> {
    let perms = st.bot_permissions(guild_id)?;
    if perms & bits == bits {
        Ok(())
    } else {
        Err(ApiError::missing_permissions())
    }
}

fn application_json(inner: &Inner) -> Value {
    let st = inner.state();
    let owner = st.guilds.values().next().map_or(st.bot_user_id, |g| g.owner_id);
    json!({
        "id": st.app_id.to_string(),
        "name": inner.cfg.bot_username,
        "icon": null,
        "description": "guildkey test double application",
        "type": null,
        "bot": st.user_json(st.bot_user_id),
        "summary": "",
        "rpc_origins": [],
        "bot_public": false,
        "bot_require_code_grant": false,
        "verify_key": "0".repeat(64),
        "flags": 0,
        "flags_new": "0",
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": null,
        "role_connections_verification_url": null,
        "owner": st.user_json(owner),
        "approximate_guild_count": st.guilds.len(),
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "team": null,
        "integration_types_config": {"0": {}},
        "eligible_oauth2_scopes": [],
    })
}

// ----- application commands ---------------------------------------------------------------

use crate::state::strip_nulls;

/// A registered command as Discord returns it.
fn command_object(st: &mut State, guild_id: Option<u64>, req: &Value) -> Value {
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let kind = req["type"].as_u64().unwrap_or(1);
    let key = (guild_id, format!("{kind}:{name}"));
    let id = match st.command_ids.get(&key) {
        Some(id) => *id,
        None => {
            let id = st.ids.fresh();
            st.command_ids.insert(key, id);
            id
        }
    };
    let version = st.ids.fresh();
    let mut cmd = json!({
        "id": id.to_string(),
        "application_id": st.app_id.to_string(),
        "version": version.to_string(),
        "default_member_permissions": match &req["default_member_permissions"] {
            Value::String(s) => json!(s),
            Value::Number(n) => json!(n.to_string()),
            _ => Value::Null,
        },
        "type": kind,
        "name": name,
        "description": req["description"].as_str().unwrap_or_default(),
        "nsfw": req["nsfw"].as_bool().unwrap_or(false),
        "integration_types": req.get("integration_types").filter(|v| !v.is_null()).cloned().unwrap_or(json!([0])),
        "contexts": req.get("contexts").cloned().unwrap_or(Value::Null),
    });
    match guild_id {
        Some(g) => cmd["guild_id"] = json!(g.to_string()),
        None => cmd["dm_permission"] = json!(req["dm_permission"].as_bool().unwrap_or(true)),
    }
    for key in ["name_localizations", "description_localizations"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            cmd[key] = v.clone();
        }
    }
    if let Some(options) = req.get("options").and_then(Value::as_array) {
        cmd["options"] = strip_nulls(&Value::Array(options.clone()));
    }
    cmd
}

fn commands(ctx: &Ctx<'_>, op_id: &str) -> Result<Reply, ApiError> {
    let inner = ctx.inner;
    let app = ctx.id("application_id")?;
    let mut st = inner.state();
    if app != st.app_id {
        return Err(ApiError::missing_access());
    }
    let guild_id = if op_id.contains("guild") {
        let g = ctx.id("guild_id")?;
        st.guild(g)?;
        if !st.guilds[&g].members.contains_key(&st.bot_user_id) {
            return Err(ApiError::missing_access());
        }
        Some(g)
    } else {
        None
    };
    let current = |st: &State| -> Vec<Value> {
        match guild_id {
            Some(g) => st.guild_commands.get(&g).cloned().unwrap_or_default(),
            None => st.global_commands.clone(),
        }
    };
    let store = |st: &mut State, list: Vec<Value>| match guild_id {
        Some(g) => {
            st.guild_commands.insert(g, list);
        }
        None => st.global_commands = list,
    };
    match op_id {
        "list_application_commands" | "list_guild_application_commands" => ok(Value::Array(current(&st))),
        "get_application_command" | "get_guild_application_command" => {
            let id = ctx.param("command_id").to_string();
            current(&st).into_iter().find(|c| c["id"] == json!(id)).map_or_else(|| Err(ApiError::unknown_command()), ok)
        }
        "delete_application_command" | "delete_guild_application_command" => {
            let id = ctx.param("command_id").to_string();
            let mut list = current(&st);
            let before = list.len();
            list.retain(|c| c["id"] != json!(id));
            if list.len() == before {
                return Err(ApiError::unknown_command());
            }
            store(&mut st, list);
            drop(st);
            inner.bump();
            no_content()
        }
        "bulk_set_application_commands" | "bulk_set_guild_application_commands" => {
            let Some(items) = ctx.body().as_array() else {
                return Err(ApiError::invalid_form(
                    "",
                    "LIST_TYPE_CONVERT",
                    "Only iterables may be used in a ListType",
                ));
            };
            let mut seen = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key = (item["type"].as_u64().unwrap_or(1), item["name"].as_str().unwrap_or_default().to_string());
                if !seen.insert(key) {
                    return Err(ApiError::invalid_form(
                        &i.to_string(),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    ));
                }
            }
            let list: Vec<Value> = items.iter().map(|c| command_object(&mut st, guild_id, c)).collect();
            store(&mut st, list.clone());
            drop(st);
            inner.bump();
            ok(Value::Array(list))
        }
        "create_application_command" | "create_guild_application_command" => {
            let body = ctx.body().clone();
            let cmd = command_object(&mut st, guild_id, &body);
            let mut list = current(&st);
            let existing = list.iter().position(|c| c["name"] == cmd["name"] && c["type"] == cmd["type"]);
            let status = match existing {
                Some(i) => {
                    list[i] = cmd.clone();
                    200
                }
                None => {
                    list.push(cmd.clone());
                    201
                }
            };
            store(&mut st, list);
            drop(st);
            inner.bump();
            Ok(Reply { status, body: Some(cmd) })
        }
        _ => unreachable!("commands() called for {op_id}"),
    }
}

// ----- channels -------------------------------------------------------------------------------

/// Discord's check that a message body is not empty.
pub(crate) fn is_empty_message(body: &Value) -> bool {
    let empty_str = |k: &str| body[k].as_str().is_none_or(str::is_empty);
    let empty_arr = |k: &str| body[k].as_array().is_none_or(Vec::is_empty);
    empty_str("content")
        && empty_arr("embeds")
        && empty_arr("components")
        && empty_arr("attachments")
        && empty_arr("sticker_ids")
        && body["poll"].is_null()
}

fn create_message(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let inner = ctx.inner;
    let channel = ctx.id("channel_id")?;
    let body = ctx.body();
    let mut st = inner.state();
    let guild_id = match st.channel(channel) {
        Some((g, c)) => {
            let perms = st.bot_permissions(g.id)?;
            use crate::config::permissions::*;
            if perms & ADMINISTRATOR == 0 && perms & VIEW_CHANNEL == 0 {
                return Err(ApiError::missing_access());
            }
            if perms & ADMINISTRATOR == 0 && (perms & SEND_MESSAGES == 0 || !c.bot_can_send) {
                return Err(ApiError::missing_permissions());
            }
            Some(g.id)
        }
        None if st.dm_user(channel).is_some() => None,
        None => return Err(ApiError::unknown_channel()),
    };
    if is_empty_message(body) {
        return Err(ApiError::empty_message());
    }
    crate::message_rules::check(body, "")?;
    let mut clean = Value::Object(without_nulls(body));
    clean["flags"] = json!(body["flags"].as_u64().unwrap_or(0) & 4);
    let id = st.create_message(channel, guild_id, &clean, 0, None);
    let json = st.message_json(&st.messages[&id]);
    drop(st);
    let mut event = json.clone();
    if let Some(g) = guild_id {
        event["guild_id"] = json!(g.to_string());
    }
    let intent = if guild_id.is_some() { intents::GUILD_MESSAGES } else { intents::DIRECT_MESSAGES };
    gateway::dispatch(inner, "MESSAGE_CREATE", event, Some(intent));
    ok(json)
}

// ----- moderation -----------------------------------------------------------------------------

/// 50013 unless the bot outranks `user` (and `user` is not the owner).
fn outranks(st: &State, guild_id: u64, user: u64) -> Result<(), ApiError> {
    let g = st.guild(guild_id)?;
    if user == g.owner_id || user == st.bot_user_id {
        return Err(ApiError::missing_permissions());
    }
    let bot_top = State::top_position(g, st.bot_user_id);
    if g.members.contains_key(&user) && State::top_position(g, user) >= bot_top {
        return Err(ApiError::missing_permissions());
    }
    Ok(())
}

fn ban(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    use crate::config::permissions::BAN_MEMBERS;
    let inner = ctx.inner;
    let guild_id = ctx.id("guild_id")?;
    let user = ctx.id("user_id")?;
    let mut st = inner.state();
    st.guild(guild_id)?;
    require(&st, guild_id, BAN_MEMBERS)?;
    outranks(&st, guild_id, user)?;
    let user_json = {
        st.user(user);
        st.user_json(user)
    };
    let g = st.guild_mut(guild_id)?;
    let was_member = g.members.remove(&user).is_some();
    g.bans.insert(user, ctx.reason());
    drop(st);
    let gid = guild_id.to_string();
    if was_member {
        gateway::dispatch(
            inner,
            "GUILD_MEMBER_REMOVE",
            json!({"guild_id": gid, "user": user_json}),
            Some(intents::GUILD_MEMBERS),
        );
    }
    gateway::dispatch(
        inner,
        "GUILD_BAN_ADD",
        json!({"guild_id": gid, "user": user_json}),
        Some(intents::GUILD_MODERATION),
    );
    inner.bump();
    no_content()
}

fn unban(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    use crate::config::permissions::BAN_MEMBERS;
    let inner = ctx.inner;
    let guild_id = ctx.id("guild_id")?;
    let user = ctx.id("user_id")?;
    let mut st = inner.state();
    st.guild(guild_id)?;
    require(&st, guild_id, BAN_MEMBERS)?;
    let user_json = st.user_json(user);
    if st.guild_mut(guild_id)?.bans.remove(&user).is_none() {
        return Err(ApiError::unknown_ban());
    }
    drop(st);
    gateway::dispatch(
        inner,
        "GUILD_BAN_REMOVE",
        json!({"guild_id": guild_id.to_string(), "user": user_json}),
        Some(intents::GUILD_MODERATION),
    );
    inner.bump();
    no_content()
}

fn kick(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    use crate::config::permissions::KICK_MEMBERS;
    let inner = ctx.inner;
    let guild_id = ctx.id("guild_id")?;
    let user = ctx.id("user_id")?;
    let mut st = inner.state();
    st.guild(guild_id)?;
    if !st.guilds[&guild_id].members.contains_key(&user) {
        return Err(ApiError::unknown_member());
    }
    require(&st, guild_id, KICK_MEMBERS)?;
    outranks(&st, guild_id, user)?;
    st.guild_mut(guild_id)?.members.remove(&user);
    let user_json = st.user_json(user);
    drop(st);
    gateway::dispatch(
        inner,
        "GUILD_MEMBER_REMOVE",
        json!({"guild_id": guild_id.to_string(), "user": user_json}),
        Some(intents::GUILD_MEMBERS),
    );
    inner.bump();
    no_content()
}

fn member_role(ctx: &Ctx<'_>, add: bool) -> Result<Reply, ApiError> {
    use crate::config::permissions::MANAGE_ROLES;
    let inner = ctx.inner;
    let guild_id = ctx.id("guild_id")?;
    let user = ctx.id("user_id")?;
    let role = ctx.id("role_id")?;
    let mut st = inner.state();
    let g = st.guild(guild_id)?;
    let r = g.roles.get(&role).filter(|r| r.id != guild_id).ok_or_else(ApiError::unknown_role)?;
    if !g.members.contains_key(&user) {
        return Err(ApiError::unknown_member());
    }
    require(&st, guild_id, MANAGE_ROLES)?;
    let bot_top = State::top_position(g, st.bot_user_id);
    if r.position >= bot_top || r.bot_id.is_some() {
        return Err(ApiError::missing_permissions());
    }
    let g = st.guild_mut(guild_id)?;
    let mut roles = g.members[&user].roles.clone();
    let changed = if add {
        !roles.contains(&role) && {
            roles.push(role);
            true
        }
    } else {
        let before = roles.len();
        roles.retain(|r| *r != role);
        roles.len() != before
    };
    let perms = State::resolve(g, user, &roles);
    let m = g.members.get_mut(&user).expect("member");
    m.roles = roles;
    m.permissions = perms;
    if changed {
        let g = &st.guilds[&guild_id];
        let mut event = st.member_json(g, &g.members[&user], false);
        event["guild_id"] = json!(guild_id.to_string());
        drop(st);
        gateway::dispatch(inner, "GUILD_MEMBER_UPDATE", event, Some(intents::GUILD_MEMBERS));
        inner.bump();
    }
    no_content()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{spec_status, SpecStatus};

    /// The route table is Discord's: same templates, same operation ids, same auth rules.
    #[test]
    fn implemented_routes_are_discords() {
        let SpecStatus::Loaded(spec) = spec_status() else {
            eprintln!("openapi.json absent: skipped");
            return;
        };
        for r in implemented_routes() {
            let op = spec
                .routes()
                .iter()
                .find(|s| s.method == r.method && s.template == r.template)
                .unwrap_or_else(|| panic!("{} {} is not in Discord's spec", r.method, r.template));
            assert_eq!(op.operation_id, r.operation_id, "{} {}", r.method, r.template);
            assert_eq!(auth_optional(&r.operation_id), spec.auth_optional(&r.operation_id), "{}", r.operation_id);
        }
    }

    #[tokio::test]
    async fn query_and_multipart_parsing() {
        let q = parse_query(Some("&wait=true&thread_id=1&flag"));
        assert_eq!(q["wait"], "true");
        assert_eq!(q["flag"], "");
        // A binary file (not UTF-8) comes through byte for byte.
        let png: &[u8] = &[0x89, b'P', b'N', b'G', 0xff, 0x00, b'\r', b'\n', 0xfe];
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
        body.extend_from_slice(png);
        body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{\"content\":\"hi\"}\r\n--XyZ--\r\n");
        let (payload, files) = multipart_parts("multipart/form-data; boundary=XyZ", &body).await.expect("multipart");
        assert_eq!(payload, Some(json!({"content": "hi"})));
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].field.as_str(), files[0].filename.as_deref()), ("files[0]", Some("a.png")));
        assert_eq!(files[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(files[0].data, png);
        assert!(multipart_parts("multipart/form-data; boundary=XyZ", b"--nope").await.is_none());
    }
}
