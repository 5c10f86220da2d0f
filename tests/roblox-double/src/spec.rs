//! Roblox's own OpenAPI 3.0 descriptions of Open Cloud (`cloud.docs.json`,
//! `secrets-store-service-v1.json`, `messaging-service-v1.json`), read once
//! per process from `ROBLOX_OPENAPI_DIR`, else `<workspace>/../shared/roblox`.
//!
//! A small loader beside the Discord double's (`discord_double::schema`),
//! not a generalisation of it: these files are OpenAPI 3.0 (`nullable`,
//! Draft 4 keywords), three documents instead of one, and their paths put a
//! verb after a parameter (`/universes/{universe_id}:publishMessage`), which
//! the Discord matcher's whole-segment parameters do not fit.
//!
//! Each schema is checked with its whole document as the root (the
//! fragment named by a root `$ref`), so `#/components/...` resolve as
//! written; OpenAPI's `nullable: true` becomes JSON Schema's `null` type.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Validator};
use regex::Regex;
use serde_json::{json, Value};

const FILES: [&str; 3] = ["cloud.docs.json", "secrets-store-service-v1.json", "messaging-service-v1.json"];
const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// One operation of one file.
#[derive(Debug)]
pub struct Operation {
    pub method: String,
    pub template: String,
    /// Index into [`Spec::docs`].
    doc: usize,
    /// JSON pointer of the operation object.
    pointer: String,
    pattern: Regex,
    params: Vec<String>,
    literal_len: usize,
}

/// The three documents and their operations.
pub struct Spec {
    docs: Vec<Value>,
    ops: Vec<Operation>,
    validators: Mutex<HashMap<(usize, String), Arc<Validator>>>,
    pub dir: PathBuf,
}

/// Where the files are looked for.
pub fn spec_dir() -> PathBuf {
    match std::env::var_os("ROBLOX_OPENAPI_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/roblox"),
    }
}

/// The spec, loaded once; `None` when the directory is absent (validation
/// skipped with a warning; a failure under `CI=true`).
pub fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<&'static Spec>> = OnceLock::new();
    *SPEC.get_or_init(|| {
        let dir = spec_dir();
        if !dir.join(FILES[0]).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("roblox-double: {} has no Open Cloud descriptions (set ROBLOX_OPENAPI_DIR)", dir.display());
            }
            eprintln!(
                "roblox-double: {} not found; Open Cloud schema validation is SKIPPED (set ROBLOX_OPENAPI_DIR)",
                dir.display()
            );
            return None;
        }
        match Spec::load(dir.clone()) {
            Ok(s) => Some(&*Box::leak(Box::new(s))),
            Err(e) => panic!("roblox-double: cannot load {}: {e}", dir.display()),
        }
    })
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema.
fn nullable_to_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
            }
            map.values_mut().for_each(nullable_to_null);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_null),
        _ => {}
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Spec {
    fn load(dir: PathBuf) -> Result<Self, String> {
        let mut docs = Vec::new();
        let mut ops = Vec::new();
        let param = Regex::new(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}").expect("a valid regex");
        for (i, file) in FILES.iter().enumerate() {
            let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
            let mut doc: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            nullable_to_null(&mut doc);
            // messaging-service v1 is served under its own prefix.
            let prefix = if file.starts_with("messaging") { "/messaging-service" } else { "" };
            for (template, item) in doc["paths"].as_object().into_iter().flatten() {
                let mut re = String::from("^");
                let mut last = 0;
                let mut params = Vec::new();
                for cap in param.captures_iter(template) {
                    let whole = cap.get(0).expect("group 0");
                    re.push_str(&regex::escape(&template[last..whole.start()]));
                    re.push_str("([^/:]+)");
                    params.push(cap[1].to_owned());
                    last = whole.end();
                }
                re.push_str(&regex::escape(&template[last..]));
                re.push('$');
                let pattern =
                    Regex::new(&format!("^{}{}", regex::escape(prefix), &re[1..])).map_err(|e| e.to_string())?;
                let literal_len = param.replace_all(template, "").len();
                for m in METHODS {
                    if item.get(m).is_some() {
                        ops.push(Operation {
                            method: m.to_ascii_uppercase(),
                            template: format!("{prefix}{template}"),
                            doc: i,
                            pointer: format!("/paths/{}/{m}", escape_pointer(template)),
                            pattern: pattern.clone(),
                            params: params.clone(),
                            literal_len,
                        });
                    }
                }
            }
            docs.push(doc);
        }
        Ok(Self { docs, ops, validators: Mutex::new(HashMap::new()), dir })
    }

    /// The operation `method` + `path` is, with its path parameters.
    pub fn find(&self, method: &str, path: &str) -> Option<(&Operation, HashMap<String, String>)> {
        self.ops
            .iter()
            .filter(|o| o.method.eq_ignore_ascii_case(method))
            .filter_map(|o| o.pattern.captures(path).map(|c| (o, c)))
            .max_by_key(|(o, _)| o.literal_len)
            .map(|(o, caps)| {
                let params = o.params.iter().enumerate().map(|(i, n)| (n.clone(), caps[i + 1].to_owned())).collect();
                (o, params)
            })
    }

    fn op_value(&self, op: &Operation) -> &Value {
        self.docs[op.doc].pointer(&op.pointer).unwrap_or(&Value::Null)
    }

    fn deref<'a>(&'a self, doc: usize, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with("#/") => self.docs[doc].pointer(&r[1..]).unwrap_or(v),
            _ => v,
        }
    }

    fn check(&self, doc: usize, pointer: &str, instance: &Value) -> Vec<String> {
        let key = (doc, pointer.to_owned());
        let cached = self.validators.lock().unwrap().get(&key).cloned();
        let validator = match cached {
            Some(v) => v,
            None => {
                let mut root = self.docs[doc].clone();
                // A URI fragment: the braces of path templates are escaped.
                root["$ref"] = json!(format!("#{}", pointer.replace('{', "%7B").replace('}', "%7D")));
                match jsonschema::options().with_draft(Draft::Draft4).build(&root) {
                    Ok(v) => {
                        let v = Arc::new(v);
                        self.validators.lock().unwrap().insert(key, v.clone());
                        v
                    }
                    Err(e) => return vec![format!("cannot compile {pointer}: {e}")],
                }
            }
        };
        validator.iter_errors(instance).take(10).map(|e| format!("{} at '{}'", e, e.instance_path().as_str())).collect()
    }

    /// Checks a request: every query parameter declared, path and query
    /// parameters of their declared type, the JSON body (if any) against
    /// the operation's request schema.
    pub fn validate_request(
        &self,
        op: &Operation,
        params: &HashMap<String, String>,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<String> {
        let o = self.op_value(op);
        let mut errors = Vec::new();
        let declared: Vec<&Value> = o["parameters"].as_array().into_iter().flatten().collect();
        let typed = |name: &str, value: &str, errors: &mut Vec<String>| {
            let Some(p) = declared.iter().find(|p| p["name"] == name) else {
                errors.push(format!("query parameter '{name}' is not declared for {} {}", op.method, op.template));
                return;
            };
            if p["schema"]["type"] == "integer" && value.parse::<i64>().is_err() {
                errors.push(format!("parameter '{name}' = '{value}' is not an integer"));
            }
        };
        for (name, value) in params {
            typed(name, value, &mut errors);
        }
        for (name, value) in query {
            typed(name, value, &mut errors);
        }
        let request_body = o.get("requestBody").map(|b| self.deref(op.doc, b));
        match (request_body, body) {
            (Some(_), Some(body)) => {
                let pointer = format!("{}/requestBody/content/application~1json/schema", op.pointer);
                errors.extend(self.check(op.doc, &pointer, body));
            }
            (Some(b), None) if b["required"] == true => errors.push("a JSON request body is required".into()),
            (None, Some(_)) => errors.push("the operation takes no request body, but one was sent".into()),
            _ => {}
        }
        errors
    }

    /// Checks an answer. A status the operation does not declare passes
    /// only when it is the gateway's (401, 429, 5xx) or, for Open Cloud v2
    /// (which declares 200 alone), an error in v2's `{code, message}` shape.
    pub fn validate_response(&self, op: &Operation, status: u16, body: Option<&Value>) -> Vec<String> {
        let responses = &self.op_value(op)["responses"];
        let Some(declared) = responses.get(status.to_string()) else {
            let v2_error = body.is_some_and(|b| b["code"].is_string() && b["message"].is_string());
            let gateway = body.is_some_and(|b| b["errors"].is_array()) || v2_error;
            return if (status == 401 || status == 429 || status >= 500 || (status >= 400 && v2_error)) && gateway {
                Vec::new()
            } else {
                vec![format!("status {status} is not declared for {} {}", op.method, op.template)]
            };
        };
        let declared = self.deref(op.doc, declared);
        let schema = declared.pointer("/content/application~1json/schema");
        match (schema, body) {
            (None, None) => Vec::new(),
            (None, Some(_)) => vec![format!("status {status} declares no JSON body")],
            (Some(_), None) => vec![format!("status {status} declares a JSON body")],
            (Some(_), Some(body)) => {
                let pointer = format!("{}/responses/{status}/content/application~1json/schema", op.pointer);
                // A `$ref`'d response object: check against its schema.
                let pointer = match responses[status.to_string()].get("$ref").and_then(Value::as_str) {
                    Some(r) => format!("{}/content/application~1json/schema", &r[1..]),
                    None => pointer,
                };
                self.check(op.doc, &pointer, body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_with_verbs_and_parameters_are_found() {
        let Some(spec) = spec() else { return };
        let (op, p) = spec.find("POST", "/cloud/v2/universes/42:publishMessage").unwrap();
        assert_eq!(op.template, "/cloud/v2/universes/{universe_id}:publishMessage");
        assert_eq!(p["universe_id"], "42");
        let (op, _) = spec.find("GET", "/cloud/v2/universes/42/secrets/public-key").unwrap();
        assert!(op.template.ends_with("/secrets/public-key"));
        let (op, p) = spec.find("PATCH", "/cloud/v2/universes/42/user-restrictions/7").unwrap();
        assert!(op.template.ends_with("{user_restriction_id}"));
        assert_eq!(p["user_restriction_id"], "7");
        assert!(spec.find("PUT", "/cloud/v2/universes/42:publishMessage").is_none());
    }

    #[test]
    fn bodies_are_checked_against_the_schemas() {
        let Some(spec) = spec() else { return };
        let (op, p) = spec.find("POST", "/cloud/v2/universes/42:publishMessage").unwrap();
        let errs = spec.validate_request(op, &p, &[], Some(&json!({"topic": "t", "message": "m"})));
        assert!(errs.is_empty(), "{errs:?}");
        assert!(!spec.validate_request(op, &p, &[], Some(&json!({"topic": "t"}))).is_empty());
        let (op, p) = spec.find("POST", "/cloud/v2/universes/42/secrets").unwrap();
        let ok = json!({"id": "guildkey", "secret": "AAAA", "key_id": "1", "domain": null});
        assert!(spec.validate_request(op, &p, &[], Some(&ok)).is_empty());
        assert!(!spec.validate_request(op, &p, &[], Some(&json!({"id": "x", "extra": 1}))).is_empty());
        assert!(spec.validate_response(op, 201, Some(&ok)).is_empty());
        assert!(!spec.validate_response(op, 201, None).is_empty());
        let (op, p) = spec.find("POST", "/cloud/v2/universes/abc/secrets").unwrap();
        assert!(!spec.validate_request(op, &p, &[], Some(&ok)).is_empty(), "universeId is an integer");
    }
}
