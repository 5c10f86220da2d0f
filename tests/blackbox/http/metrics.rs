//! Metrics and the OpenAPI document.

use super::*;

/// Sums the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let label = regex::Regex::new(r#"(\w+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = label
            .captures_iter(series_labels)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or_else(|_| panic!("bad sample: {line}"));
        }
    }
    found
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_verifications_by_outcome_and_time_them() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "measured", "audit.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &token).await.ok();
    get(&app, "/v1/verify", &token).await.ok();
    get(&app, &audit_path(DEMO, ""), &token).await.ok();
    get(&app, "/v1/verify", &unknown_token()).await.err(401, "invalid_key");
    get(&app, "/v1/verify", "gk_live_nope").await.err(401, "malformed_key");
    get_anon(&app, "/v1/verify").await.err(401, "missing_key");
    get_anon(&app, "/nowhere").await.err(404, "not_found");

    let reply = get_anon(&app, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap_or_default().starts_with("text/plain"), "Prometheus text");
    let text = &reply.text;
    let requests = |route: &str, status: &str| {
        metric(text, "guildkey_http_requests_total", &[("route", route), ("status", status)]).unwrap_or(0.0)
    };
    assert_eq!(requests("/v1/verify", "200"), 2.0, "{text}");
    assert_eq!(requests("/v1/verify", "401"), 3.0, "{text}");
    assert_eq!(requests("/v1/guilds/{guild_id}/audit-log", "200"), 1.0, "routes are labelled by template: {text}");
    assert!(metric(text, "guildkey_http_requests_total", &[("status", "404")]) >= Some(1.0), "{text}");
    assert!(!text.contains(&DEMO.to_string()), "no raw ids in labels (unbounded cardinality)");

    let outcome = |o: &str| metric(text, "guildkey_key_verifications_total", &[("outcome", o)]).unwrap_or(0.0);
    assert_eq!(
        ["ok", "invalid_key", "malformed_key", "missing_key"].map(outcome),
        [3.0, 1.0, 1.0, 1.0],
        "verification outcomes: {text}"
    );

    let histogram = "guildkey_http_request_duration_seconds";
    let verify = [("route", "/v1/verify")];
    assert!(text.lines().any(|l| l.starts_with(&format!("{histogram}_bucket{{"))), "{text}");
    assert_eq!(metric(text, &format!("{histogram}_count"), &verify), Some(5.0));
    assert_eq!(metric(text, &format!("{histogram}_bucket"), &[("route", "/v1/verify"), ("le", "+Inf")]), Some(5.0));
    assert!(metric(text, &format!("{histogram}_sum"), &verify).is_some_and(|s| s > 0.0));
    assert!(!text.contains(&token), "the metrics never show a secret");

    // The key came from the CLI, another process: applied alone, no reload.
    assert_eq!(metric(text, "guildkey_key_index_full_loads_total", &[]), Some(1.0), "{text}");
    assert!(metric(text, "guildkey_key_index_keys_applied_total", &[]) >= Some(1.0), "{text}");
}

#[tokio::test]
async fn made_up_methods_are_counted_as_other_and_never_copied_into_the_metrics() {
    const METHODS: usize = 200;
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "measured", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let made_up = |i: usize| reqwest::Method::from_bytes(format!("X{i:04}{}", "Q".repeat(2048)).as_bytes()).unwrap();
    let paths = ["/healthz".to_owned(), "/nowhere".to_owned(), "/v1/verify".to_owned(), audit_path(DEMO, "")];
    let send_all = |from: usize, to: usize| {
        let (app, token, paths) = (&app, &token, &paths);
        async move {
            for i in from..to {
                let reply =
                    send(app.http.request(made_up(i), app.url(&paths[i % paths.len()])).bearer_auth(token)).await;
                assert!(matches!(reply.status, 404 | 405), "a made-up method got {}: {}", reply.status, reply.text);
            }
        }
    };
    // Once per path first, so every series the made-up methods can make exists.
    send_all(0, paths.len()).await;
    let before = get_anon(&app, "/metrics").await.text;
    send_all(paths.len(), METHODS).await;
    let after = get_anon(&app, "/metrics").await.text;

    assert!(!after.contains("QQQQ") && !after.contains("X0100"), "a made-up method reached /metrics");
    let other = metric(&after, "guildkey_http_requests_total", &[("method", "other")]).unwrap_or(0.0);
    assert!(other >= METHODS as f64, "made-up methods are counted as other: {other}");
    eprintln!(
        "/metrics: {} bytes after {} made-up methods, {} bytes after {METHODS}",
        before.len(),
        paths.len(),
        after.len()
    );
    // Only counts changed: a few digits more at most, never a series per method.
    assert!(after.len() < before.len() + 512, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(after.len() < 64 * 1024, "/metrics is {} bytes", after.len());
    // Standard methods keep their names.
    assert!(metric(&after, "guildkey_http_requests_total", &[("method", "GET")]).is_some(), "{after}");
}

/// Every route of SPEC §6, as (method, OpenAPI path).
const SPEC_ROUTES: [(&str, &str); 10] = [
    ("get", "/v1/verify"),
    ("get", "/v1/guilds/{guild_id}"),
    ("get", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("put", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("delete", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("put", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}"),
    ("delete", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}"),
    ("get", "/v1/guilds/{guild_id}/audit-log"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_spec_route_and_every_documented_route_exists() {
    let app = spawn_app().await;
    // A test key with every scope: writes are dry runs, nothing changes on Discord.
    let token = app.create_key(DEMO, "explorer", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;

    let reply = get_anon(&app, "/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap_or_default().starts_with("application/json"));
    let doc = reply.json();

    // A valid OpenAPI 3 document, in outline.
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths object");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {r}");
    }

    let mut spec = BTreeSet::from(SPEC_ROUTES);
    spec.insert(("get", "/openapi.json"));
    for (method, path) in &spec {
        let op = &paths.get(*path).unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(op.is_object(), "{} {path} is not documented", method.to_uppercase());
        assert!(op["responses"].is_object(), "{method} {path} has responses");
        // Every operation says whether it needs a key: the bearer scheme, or
        // `security: []` for the public ones (never left out).
        let public = !path.starts_with("/v1/") || *path == "/v1/leaked";
        if public {
            assert_eq!(op["security"], serde_json::json!([]), "{method} {path} says it needs no key");
        } else {
            assert_eq!(op["security"], serde_json::json!([{"bearer": []}]), "{method} {path} says it needs a key");
        }
    }

    // Every documented operation is routed.
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            documented.insert((method, path.as_str()));
            let url = path
                .replace("{guild_id}", &DEMO.to_string())
                .replace("{user_id}", &ids::PAT_ID.to_string())
                .replace("{role_id}", &ids::VERIFIED_ROLE_ID.to_string());
            let req = app.http.request(method.to_uppercase().parse().unwrap(), app.url(&url)).bearer_auth(&token);
            let reply = send(req).await;
            assert!(
                reply.status != 404 && reply.status != 405,
                "{} {url} is documented but answers {}: {}",
                method.to_uppercase(),
                reply.status,
                reply.text
            );
        }
    }
    let undocumented: Vec<_> = spec.difference(&documented).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

/// `schema`'s properties and required ones, through `$ref` and `allOf`.
fn schema_fields(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return schema_fields(doc, &doc["components"]["schemas"][name]);
    }
    let (mut properties, mut required) = (BTreeSet::new(), BTreeSet::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = schema_fields(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    properties.extend(schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    required.extend(schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned)));
    (properties, required)
}

/// Issue 14, hole 11: what schemathesis flagged as missing from the document.
#[tokio::test]
async fn the_openapi_document_states_id_patterns_query_types_body_limits_every_answer_and_its_headers() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "explorer", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;
    let doc = get_anon(&app, "/openapi.json").await.json();
    let paths = doc["paths"].as_object().expect("paths");

    // Every path id has the pattern the server enforces: checked against the server itself.
    // A member's `user_id` has its own (a snowflake or `roblox:<userId>`).
    let mut patterns = BTreeSet::new();
    let mut member_patterns = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
                let name = param["name"].as_str().unwrap();
                assert!(name.ends_with("_id"), "{method} {path}: path parameter {name}");
                assert_eq!(param["schema"]["type"], "string", "{method} {path} {name}: {param}");
                let pattern = param["schema"]["pattern"].as_str();
                let pattern = pattern.unwrap_or_else(|| panic!("{method} {path} {name} has no pattern")).to_owned();
                if name == "user_id" { &mut member_patterns } else { &mut patterns }.insert(pattern);
            }
        }
    }
    assert_eq!(patterns.len(), 1, "one id pattern: {patterns:?}");
    let pattern = regex::Regex::new(patterns.first().unwrap()).expect("the pattern compiles");
    let max = i64::MAX.to_string();
    let over = (i64::MAX as u64 + 1).to_string();
    let candidates =
        [OTHER.to_string(), "1".into(), max, "0".into(), format!("0{OTHER}"), over, "9".repeat(20), "12a".into()];
    for id in candidates {
        let reply = get(&app, &format!("/v1/guilds/{id}/audit-log"), &token).await;
        let accepted = reply.status != 400;
        assert_eq!(pattern.is_match(&id), accepted, "id {id:?}: the pattern and the server disagree ({})", reply.text);
        if accepted {
            reply.err(403, "guild_mismatch");
        }
    }
    assert!(pattern.is_match(&DEMO.to_string()) && pattern.is_match(&ids::PAT_ID.to_string()));
    assert_eq!(member_patterns.len(), 1, "one member id pattern: {member_patterns:?}");
    let member = regex::Regex::new(member_patterns.first().unwrap()).expect("the member pattern compiles");
    let candidates = [
        "roblox:1",
        "roblox:9007199254740992",
        "roblox:9007199254740993",
        "roblox:0",
        "roblox:01",
        "roblox:",
        "Roblox:1",
        "1",
        "0",
    ];
    for id in candidates {
        let reply = get(&app, &format!("/v1/guilds/{DEMO}/bans/{id}"), &token).await;
        let accepted = reply.status != 400;
        assert_eq!(
            member.is_match(id),
            accepted,
            "user_id {id:?}: the pattern and the server disagree ({})",
            reply.text
        );
    }

    // The audit log's query values are integers.
    let audit = &paths["/v1/guilds/{guild_id}/audit-log"]["get"];
    for name in ["limit", "before"] {
        let param = audit["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).expect(name);
        assert_eq!((&param["in"], &param["schema"]["type"]), (&json!("query"), &json!("integer")), "{param}");
    }

    // The ban body's limits, and the request body's size.
    let ban_body = &doc["components"]["schemas"]["BanBody"];
    assert_eq!(ban_body["properties"]["reason"]["maxLength"], 512, "{ban_body}");
    let seconds = &ban_body["properties"]["delete_message_seconds"];
    assert_eq!((&seconds["minimum"], &seconds["maximum"]), (&json!(0), &json!(604_800)), "{seconds}");
    let ban = &paths["/v1/guilds/{guild_id}/bans/{user_id}"];
    assert_eq!(ban["put"]["requestBody"]["x-max-body-bytes"], 16_384, "the default http.max_body_bytes");
    // Optional, and an object when sent (JSON null is refused, so it is not offered).
    let body = &ban["put"]["requestBody"];
    assert_ne!(body["required"], true, "{body}");
    assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/BanBody", "{body}");
    assert!(ban["put"]["requestBody"]["description"].as_str().unwrap_or_default().contains("16384 bytes"));

    // Every operation lists every answer it can give, with its headers.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let keyed = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let responses = op["responses"].as_object().unwrap();
            let mut want = vec!["200", "404", "405", "413", "431"];
            if keyed {
                want.extend(["400", "401", "403", "429"]);
            }
            for status in want {
                let row = responses.get(status).unwrap_or_else(|| panic!("{method} {path} has no {status} row"));
                let reason = row["description"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{method} {path} {status}: {row}");
                if status != "200" {
                    assert!(
                        row["content"]["application/json"]["schema"]["$ref"].is_string(),
                        "{method} {path} {status}"
                    );
                }
            }
            let headers = |status: &str| -> BTreeSet<String> {
                responses[status]["headers"].as_object().into_iter().flatten().map(|(k, _)| k.to_lowercase()).collect()
            };
            assert!(headers("405").contains("allow"), "{method} {path}");
            if keyed {
                assert!(headers("401").contains("www-authenticate"), "{method} {path}");
                for status in ["200", "429"] {
                    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
                        assert!(headers(status).contains(name), "{method} {path} {status} lacks {name}");
                    }
                }
                assert!(headers("429").contains("retry-after"), "{method} {path}");
            }
        }
    }

    // Write results: every field, documented and answered.
    let role = format!("/v1/guilds/{DEMO}/members/{}/roles/{}", ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let ban_url = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);
    for (method, path, url, own) in [
        ("put", "/v1/guilds/{guild_id}/bans/{user_id}", &ban_url, "banned"),
        ("delete", "/v1/guilds/{guild_id}/bans/{user_id}", &ban_url, "banned"),
        ("put", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", &role, "has_role"),
        ("delete", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", &role, "has_role"),
    ] {
        let data =
            &paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"];
        let (properties, required) = schema_fields(&doc, data);
        for field in ["changed", "dry_run", "audit_event_id", own] {
            assert!(properties.contains(field), "{method} {path}: {field} is not documented: {properties:?}");
        }
        let answered =
            send(app.http.request(method.to_uppercase().parse().unwrap(), app.url(url)).bearer_auth(&token)).await.ok();
        let answered: BTreeSet<String> = keys_of(&answered).into_iter().map(str::to_owned).collect();
        assert!(answered.is_subset(&properties), "{method} {path}: undocumented fields in {answered:?}");
        assert!(required.is_subset(&answered), "{method} {path}: required {required:?}, answered {answered:?}");
    }
}
