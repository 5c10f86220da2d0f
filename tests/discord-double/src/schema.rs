//! Holds the double (and the bot talking to it) to Discord's own OpenAPI 3.1 description:
//! path + method → operation, request bodies against the operation's `requestBody` schema,
//! responses against the schema declared for their status.
//!
//! The file is read once per process from `DISCORD_OPENAPI_PATH`, else from
//! `<workspace>/../shared/discord/openapi.json`. Where the spec disagrees with Discord's
//! documentation the documentation wins, so four points are patched in before compiling:
//! `default_member_permissions` is a string on the wire, message `content` is at most 2000
//! characters (both documented caveats), the field errors of `Invalid Form Body` carry
//! string codes, and an attachment uploaded with the request is referred to by the integer
//! index of its file part. Validators are compiled on first use and cached for the whole process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Value};

/// The URI the spec is registered under; `$ref`s of extracted fragments are rewritten to it.
const SPEC_URI: &str = "urn:discord:openapi";

/// One failed check of a JSON document against a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// Where in the spec: the fragment's JSON pointer plus the failing keyword's location.
    pub schema_path: String,
    /// Where in the document (JSON pointer).
    pub instance_path: String,
    /// The validator's message.
    pub message: String,
}

/// A path template with its method and operation id.
#[derive(Clone, Debug)]
pub struct RouteTemplate {
    /// Upper-case HTTP method.
    pub method: String,
    /// Path template without the `/api/v10` prefix, e.g. `/channels/{channel_id}/messages`.
    pub template: String,
    /// Discord's `operationId`.
    pub operation_id: String,
    /// JSON pointer of the operation object in the spec (empty when not from the spec).
    pub pointer: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(String),
}

impl RouteTemplate {
    /// Parses `template` (`{name}` segments are parameters).
    pub fn new(method: &str, template: &str, operation_id: &str, pointer: String) -> Self {
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param(s[1..s.len() - 1].to_string())
                } else {
                    Segment::Literal(s.to_string())
                }
            })
            .collect();
        RouteTemplate {
            method: method.to_ascii_uppercase(),
            template: template.to_string(),
            operation_id: operation_id.to_string(),
            pointer,
            segments,
        }
    }

    /// The path parameters when `path` fits this template, with the number of literal
    /// segments (more literals = more specific: `/users/@me` beats `/users/{user_id}`).
    fn fit(&self, path: &str) -> Option<(usize, HashMap<String, String>)> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        let mut literals = 0;
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => literals += 1,
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), percent_decode(part));
                }
            }
        }
        Some((literals, params))
    }
}

/// Finds the most specific template for `method` + `path` (path without `/api/v10`).
pub fn match_route<'a>(
    routes: &'a [RouteTemplate],
    method: &str,
    path: &str,
) -> Option<(&'a RouteTemplate, HashMap<String, String>)> {
    routes
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(method))
        .filter_map(|r| r.fit(path).map(|(score, params)| (score, r, params)))
        .max_by_key(|(score, _, _)| *score)
        .map(|(_, r, params)| (r, params))
}

/// Decodes `%XX` escapes (as in `X-Audit-Log-Reason` and path segments); invalid escapes and
/// non-UTF-8 results are kept as they were.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Discord's OpenAPI description, patched and ready to validate against.
pub struct Spec {
    doc: Value,
    registry: Registry<'static>,
    routes: Vec<RouteTemplate>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
    /// Where it was read from.
    pub path: PathBuf,
}

/// Whether the spec could be used.
#[derive(Clone)]
pub enum SpecStatus {
    /// Loaded from this path.
    Loaded(&'static Spec),
    /// Not found at this path: validation is skipped (a failure under `CI=true`).
    Absent(PathBuf),
    /// Found but unreadable or uncompilable.
    Broken(String),
}

/// Where the spec is looked for: `DISCORD_OPENAPI_PATH`, else
/// `CARGO_MANIFEST_DIR/../../../shared/discord/openapi.json` (the workspace's sibling
/// `shared/` directory).
pub fn spec_path() -> PathBuf {
    match std::env::var_os("DISCORD_OPENAPI_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/discord/openapi.json"),
    }
}

/// Set by the interactive double (`cargo run -p discord-double`), whose banner says
/// whether requests are validated: no warning about a missing spec then.
pub static QUIET_WHEN_ABSENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads (once per process) and returns the spec's status.
pub fn spec_status() -> SpecStatus {
    static STATUS: OnceLock<SpecStatus> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            let path = spec_path();
            if !path.exists() {
                if QUIET_WHEN_ABSENT.load(std::sync::atomic::Ordering::Relaxed) {
                    return SpecStatus::Absent(path);
                }
                eprintln!(
                    "discord-double: {} not found; Discord schema validation is SKIPPED \
                     (set DISCORD_OPENAPI_PATH; under CI=true this is a failure)",
                    path.display()
                );
                return SpecStatus::Absent(path);
            }
            match Spec::load(&path) {
                Ok(spec) => SpecStatus::Loaded(Box::leak(Box::new(spec))),
                Err(e) => SpecStatus::Broken(format!("{}: {e:#}", path.display())),
            }
        })
        .clone()
}

/// Applies the caveats of `shared/discord/README.md` (Discord's docs win over the spec).
fn patch(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for name in
        ["ApplicationCommandCreateRequest", "ApplicationCommandPatchRequestPartial", "ApplicationCommandUpdateRequest"]
    {
        if let Some(p) = schemas.pointer_mut(&format!("/{name}/properties/default_member_permissions")) {
            *p = json!({"type": ["string", "null"], "pattern": "^[0-9]+$"});
        }
    }
    // Field errors carry string codes (`{"code": "BASE_TYPE_REQUIRED", "message": ...}`, as
    // Discord's docs and serenity's `DiscordJsonSingleError` have it); the spec reuses the
    // top-level `Error` with an integer code, which no real `50035` body satisfies.
    if let Some(p) = schemas.pointer_mut("/InnerErrors/properties/_errors/items") {
        *p = json!({
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        });
    }
    for name in ["BaseCreateMessageCreateRequest", "MessageCreateRequest", "MessageEditRequestPartial"] {
        if let Some(p) = schemas.pointer_mut(&format!("/{name}/properties/content/maxLength")) {
            *p = json!(2000);
        }
    }
    // A file uploaded with the request is referred to by its part's index
    // (`files[0]` is `{"id": 0}`, an integer, as in the docs' "Uploading
    // Files" example and as serenity sends it); existing attachments keep
    // their snowflake.
    if let Some(p) = schemas.pointer_mut("/MessageAttachmentRequest/properties/id") {
        *p = json!({"anyOf": [
            {"$ref": "#/components/schemas/SnowflakeType"},
            {"type": "integer", "minimum": 0, "maximum": 9},
        ]});
    }
}

/// Rewrites local `$ref`s (`#/...`) of a fragment so they point into the registered spec.
fn rebase_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "$ref" {
                    if let Value::String(s) = val {
                        if s.starts_with('#') {
                            *s = format!("{SPEC_URI}{s}");
                        }
                    }
                } else {
                    rebase_refs(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rebase_refs),
        _ => {}
    }
}

/// Turns a validation error into [`SchemaError`]s. A failed `anyOf`/`oneOf` is replaced by the
/// errors of its closest branch (fewest errors, ignoring branches that only failed on the
/// instance's type, such as `{"type": "null"}`), so the message names the real culprit.
fn flatten(pointer: &str, e: &jsonschema::ValidationError<'_>, depth: usize, out: &mut Vec<SchemaError>) {
    use jsonschema::error::ValidationErrorKind as K;
    let here = e.instance_path().as_str().to_string();
    if depth < 6 {
        if let K::AnyOf { context } | K::OneOfNotValid { context } = e.kind() {
            let only_type_mismatch = |branch: &Vec<jsonschema::ValidationError<'static>>| {
                branch.iter().all(|b| {
                    b.instance_path().as_str() == here
                        && matches!(b.kind(), K::Type { .. } | K::Enum { .. } | K::Constant { .. })
                })
            };
            let closest = context.iter().filter(|b| !b.is_empty() && !only_type_mismatch(b)).min_by_key(|b| b.len());
            if let Some(branch) = closest {
                for inner in branch {
                    flatten(pointer, inner, depth + 1, out);
                }
                return;
            }
        }
    }
    let schema_path = match e.absolute_keyword_location() {
        Some(uri) => uri.as_str().trim_start_matches(SPEC_URI).to_string(),
        None => format!("{pointer}{}", e.schema_path().as_str()),
    };
    out.push(SchemaError { schema_path, instance_path: here, message: e.to_string() });
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

impl Spec {
    fn load(path: &std::path::Path) -> anyhow::Result<Spec> {
        let text = std::fs::read_to_string(path)?;
        let mut doc: Value = serde_json::from_str(&text)?;
        patch(&mut doc);
        let mut routes = Vec::new();
        if let Some(paths) = doc["paths"].as_object() {
            for (template, item) in paths {
                for m in METHODS {
                    if let Some(id) = item[m]["operationId"].as_str() {
                        let pointer = format!("/paths/{}/{m}", escape_pointer(template));
                        routes.push(RouteTemplate::new(m, template, id, pointer));
                    }
                }
            }
        }
        let registry = Registry::new().draft(Draft::Draft202012).add(SPEC_URI, doc.clone())?.prepare()?;
        Ok(Spec { doc, registry, routes, validators: Mutex::new(HashMap::new()), path: path.to_path_buf() })
    }

    /// Every operation in the spec.
    pub fn routes(&self) -> &[RouteTemplate] {
        &self.routes
    }

    /// The operation for `method` + `path` (path without `/api/v10`).
    pub fn find_operation(&self, method: &str, path: &str) -> Option<&RouteTemplate> {
        match_route(&self.routes, method, path).map(|(r, _)| r)
    }

    fn operation(&self, operation_id: &str) -> Option<&RouteTemplate> {
        self.routes.iter().find(|r| r.operation_id == operation_id)
    }

    /// Follows a `$ref` to `#/components/...` inside the spec.
    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        let mut v = v;
        for _ in 0..8 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with("#/") => match self.doc.pointer(&r[1..]) {
                    Some(target) => v = target,
                    None => break,
                },
                _ => break,
            }
        }
        v
    }

    /// The JSON schema of the operation's JSON request body, with its pointer.
    fn request_schema(&self, operation_id: &str) -> Option<(String, &Value)> {
        let op = self.operation(operation_id)?;
        let body = self.deref(self.doc.pointer(&op.pointer)?.get("requestBody")?);
        let schema = body.pointer("/content/application~1json/schema")?;
        Some((format!("#{}/requestBody/content/application~1json/schema", op.pointer), schema))
    }

    /// What the spec declares for `status`: `Ok(Some(schema))`, `Ok(None)` for a declared
    /// status without a JSON body (e.g. 204), `Err(())` when the status is not declared.
    #[allow(clippy::result_unit_err, clippy::type_complexity)]
    fn response_schema(&self, operation_id: &str, status: u16) -> Result<Option<(String, &Value)>, ()> {
        let op = self.operation(operation_id).ok_or(())?;
        let responses = self.doc.pointer(&op.pointer).and_then(|o| o.get("responses")).ok_or(())?;
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        let key =
            [exact.as_str(), class.as_str(), "default"].into_iter().find(|k| responses.get(*k).is_some()).ok_or(())?;
        let resp = self.deref(&responses[key]);
        Ok(resp
            .pointer("/content/application~1json/schema")
            .map(|s| (format!("#{}/responses/{}/content/application~1json/schema", op.pointer, key), s)))
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<Arc<Validator>, String> {
        if let Some(v) = self.validators.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        let mut fragment = schema.clone();
        rebase_refs(&mut fragment);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .build(&fragment)
            .map_err(|e| format!("cannot compile schema {key}: {e}"))?;
        let validator = Arc::new(validator);
        self.validators.lock().unwrap().insert(key.to_string(), validator.clone());
        Ok(validator)
    }

    /// Validates `instance` against the schema at `pointer` (a fragment of the spec).
    /// A union (`anyOf`/`oneOf` of `$ref`s) whose branches pin `type` with an `enum` (like
    /// interaction callbacks) is narrowed to the branch matching the instance's `type`, so the
    /// errors name the failing field instead of "not valid under any of the schemas".
    fn check(&self, pointer: &str, schema: &Value, instance: &Value) -> Vec<SchemaError> {
        let (pointer, schema) = self.narrow_union(pointer, schema, instance);
        let validator = match self.validator(&pointer, schema) {
            Ok(v) => v,
            Err(message) => return vec![SchemaError { schema_path: pointer, instance_path: String::new(), message }],
        };
        let mut out = Vec::new();
        for e in validator.iter_errors(instance).take(20) {
            flatten(&pointer, &e, 0, &mut out);
        }
        out
    }

    fn narrow_union<'a>(&'a self, pointer: &str, schema: &'a Value, instance: &Value) -> (String, &'a Value) {
        let Some(kind) = instance.get("type") else {
            return (pointer.to_string(), schema);
        };
        for keyword in ["anyOf", "oneOf"] {
            let Some(branches) = schema.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            for branch in branches {
                let Some(r) = branch.get("$ref").and_then(Value::as_str) else {
                    continue;
                };
                let target = self.deref(branch);
                let allowed = target.pointer("/properties/type/enum").and_then(Value::as_array);
                if allowed.is_some_and(|a| a.contains(kind)) {
                    return (r.to_string(), target);
                }
            }
        }
        (pointer.to_string(), schema)
    }

    /// Whether the operation's `security` allows no bot token (`{}` among its requirements).
    pub fn auth_optional(&self, operation_id: &str) -> bool {
        self.operation(operation_id)
            .and_then(|op| self.doc.pointer(&op.pointer))
            .and_then(|o| o["security"].as_array())
            .is_some_and(|reqs| reqs.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())))
    }

    /// Validates a JSON request body of `operation_id`.
    pub fn validate_request(&self, operation_id: &str, body: &Value) -> Vec<SchemaError> {
        match self.request_schema(operation_id) {
            Some((pointer, schema)) => self.check(&pointer, schema, body),
            None => vec![SchemaError {
                schema_path: format!("operation {operation_id}"),
                instance_path: String::new(),
                message: "the operation takes no JSON request body, but one was sent".into(),
            }],
        }
    }

    /// Validates a response of `operation_id` with `status` (`body` = `None`: no body).
    /// Undeclared 5xx statuses pass (Discord does not describe them); an undeclared 2xx, 3xx
    /// or 4xx status, a body where none is declared, and a missing declared body are errors.
    pub fn validate_response(&self, operation_id: &str, status: u16, body: Option<&Value>) -> Vec<SchemaError> {
        let declared = self.response_schema(operation_id, status);
        let err = |message: String| {
            vec![SchemaError {
                schema_path: format!("operation {operation_id} responses/{status}"),
                instance_path: String::new(),
                message,
            }]
        };
        match (declared, body) {
            (Err(()), _) if status >= 500 => vec![],
            (Err(()), _) => err(format!("status {status} is not declared for {operation_id}")),
            (Ok(None), None) => vec![],
            (Ok(None), Some(_)) => err(format!("status {status} declares no JSON body")),
            (Ok(Some(_)), None) => err(format!("status {status} declares a JSON body")),
            (Ok(Some((pointer, schema))), Some(body)) => self.check(&pointer, schema, body),
        }
    }

    /// Validates `instance` against `#/components/schemas/{name}`.
    pub fn validate_component(&self, name: &str, instance: &Value) -> Vec<SchemaError> {
        let pointer = format!("#/components/schemas/{name}");
        let schema = json!({ "$ref": pointer });
        self.check(&pointer, &schema, instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_beat_parameters() {
        let routes = vec![
            RouteTemplate::new("get", "/users/{user_id}", "get_user", String::new()),
            RouteTemplate::new("get", "/users/@me", "get_my_user", String::new()),
        ];
        let (r, _) = match_route(&routes, "GET", "/users/@me").unwrap();
        assert_eq!(r.operation_id, "get_my_user");
        let (r, p) = match_route(&routes, "GET", "/users/42").unwrap();
        assert_eq!(r.operation_id, "get_user");
        assert_eq!(p["user_id"], "42");
        assert!(match_route(&routes, "POST", "/users/42").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("API%20key%20%E2%9C%93"), "API key ✓");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
