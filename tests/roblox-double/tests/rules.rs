//! The double's own rules, through HTTP as guildkey meets them.

use std::time::Duration;

use roblox_double::{RobloxDouble, API_KEY};
use serde_json::{json, Value};

async fn send(
    d: &RobloxDouble,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value, Option<String>) {
    let c = reqwest::Client::new();
    let mut req = c.request(method.parse().unwrap(), format!("{}{path}", d.base_url()));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), retry)
}

#[tokio::test]
async fn publish_limits_and_keys() {
    let d = RobloxDouble::start().await;
    let p = "/cloud/v2/universes/7:publishMessage";
    assert_eq!(send(&d, "POST", p, Some(json!({"topic": "t", "message": "m"})), Some(API_KEY)).await.0, 200);
    assert_eq!(d.published().len(), 1);
    let (s, b, _) = send(&d, "POST", p, Some(json!({"topic": "t".repeat(81), "message": "m"})), Some(API_KEY)).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
    let big = "x".repeat(1025);
    assert_eq!(send(&d, "POST", p, Some(json!({"topic": "t", "message": big})), Some(API_KEY)).await.0, 400);
    assert_eq!(
        send(&d, "POST", p, Some(json!({"topic": "t"})), Some(API_KEY)).await.0,
        400,
        "schema: message required"
    );
    let (s, b, _) = send(&d, "POST", p, Some(json!({"topic": "t", "message": "m"})), None).await;
    assert_eq!(s, 401);
    assert!(b["errors"].is_array());
    assert_eq!(send(&d, "POST", p, Some(json!({"topic": "t", "message": "m"})), Some("wrong")).await.0, 403);
    d.fail(1, 429, Some(3));
    let (s, _, retry) = send(&d, "POST", p, Some(json!({"topic": "t", "message": "m"})), Some(API_KEY)).await;
    assert_eq!((s, retry.as_deref()), (429, Some("3")));
    assert_eq!(d.calls().len(), 7);
}

#[tokio::test]
async fn restrictions_two_updates_a_minute_and_the_whole_mask() {
    let d = RobloxDouble::start().await;
    let p = "/cloud/v2/universes/7/user-restrictions/42?updateMask=gameJoinRestriction";
    let ban = json!({"gameJoinRestriction": {"active": true, "displayReason": "banned"}});
    assert_eq!(send(&d, "PATCH", p, Some(ban.clone()), Some(API_KEY)).await.0, 200);
    assert_eq!(d.restriction(7, 42).unwrap()["active"], true);
    let lift = json!({"gameJoinRestriction": {"active": false}});
    assert_eq!(send(&d, "PATCH", p, Some(lift), Some(API_KEY)).await.0, 200);
    let (s, b, retry) = send(&d, "PATCH", p, Some(ban.clone()), Some(API_KEY)).await;
    assert_eq!((s, b["code"].as_str(), retry.is_some()), (429, Some("RESOURCE_EXHAUSTED"), true));
    d.advance(Duration::from_secs(61));
    assert_eq!(send(&d, "PATCH", p, Some(ban), Some(API_KEY)).await.0, 200);
    let sub = "/cloud/v2/universes/7/user-restrictions/43?updateMask=gameJoinRestriction.active";
    assert_eq!(
        send(&d, "PATCH", sub, Some(json!({"gameJoinRestriction": {"active": true}})), Some(API_KEY)).await.0,
        400
    );
    let long = json!({"gameJoinRestriction": {"active": true, "displayReason": "r".repeat(401)}});
    assert_eq!(
        send(
            &d,
            "PATCH",
            "/cloud/v2/universes/7/user-restrictions/44?updateMask=gameJoinRestriction",
            Some(long),
            Some(API_KEY)
        )
        .await
        .0,
        400
    );
    let (s, b, _) = send(&d, "GET", "/cloud/v2/universes/7/user-restrictions/42", None, Some(API_KEY)).await;
    assert_eq!((s, &b["gameJoinRestriction"]["active"]), (200, &json!(true)));
}

#[tokio::test]
async fn secrets_are_unsealed_and_held_to_their_rules() {
    let d = RobloxDouble::start().await;
    let (s, pk, _) = send(&d, "GET", "/cloud/v2/universes/7/secrets/public-key", None, Some(API_KEY)).await;
    assert_eq!(s, 200);
    let key_id = pk["key_id"].as_str().unwrap();
    let sealed = d.seal(b"gk_live_secret");
    let create = json!({"id": "guildkey", "secret": sealed, "key_id": key_id, "domain": "keys.example.com"});
    assert_eq!(send(&d, "POST", "/cloud/v2/universes/7/secrets", Some(create.clone()), Some(API_KEY)).await.0, 201);
    assert_eq!(d.secret(7, "guildkey").unwrap().plaintext, "gk_live_secret");
    assert_eq!(send(&d, "POST", "/cloud/v2/universes/7/secrets", Some(create), Some(API_KEY)).await.0, 409);
    let update = json!({"secret": d.seal(b"second"), "key_id": key_id, "domain": "keys.example.com"});
    assert_eq!(send(&d, "PATCH", "/cloud/v2/universes/7/secrets/guildkey", Some(update), Some(API_KEY)).await.0, 200);
    assert_eq!(d.secret(7, "guildkey").unwrap().plaintext, "second");
    let bad_id = json!({"id": "1bad", "secret": d.seal(b"x"), "key_id": key_id});
    assert_eq!(send(&d, "POST", "/cloud/v2/universes/7/secrets", Some(bad_id), Some(API_KEY)).await.0, 400);
    let clear = json!({"id": "plain", "secret": "bm90IHNlYWxlZA==", "key_id": key_id});
    assert_eq!(send(&d, "POST", "/cloud/v2/universes/7/secrets", Some(clear), Some(API_KEY)).await.0, 400);
    let too_long = json!({"id": "big", "secret": d.seal("x".repeat(1025).as_bytes()), "key_id": key_id});
    assert_eq!(send(&d, "POST", "/cloud/v2/universes/7/secrets", Some(too_long), Some(API_KEY)).await.0, 400);
    let (s, list, _) = send(&d, "GET", "/cloud/v2/universes/7/secrets?limit=10", None, Some(API_KEY)).await;
    assert_eq!((s, list["secrets"].as_array().unwrap().len()), (200, 1));
    assert_eq!(send(&d, "DELETE", "/cloud/v2/universes/7/secrets/guildkey", None, Some(API_KEY)).await.0, 200);
    assert_eq!(send(&d, "DELETE", "/cloud/v2/universes/7/secrets/guildkey", None, Some(API_KEY)).await.0, 404);
    // The double's own answers passed their schemas.
    assert!(d.violations().iter().all(|v| !v.contains("own answer")), "{:#?}", d.violations());
}
