//! One answer of the listener, read whole so assertions can show it, and
//! the requests the suites make to get one. Bodies are read through
//! [`super::text`], so the end-of-test secret scan sees every one.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::{json, Value};

use super::App;

/// A response read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// From sending the request to the end of the body.
    pub took: Duration,
}

impl Reply {
    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    #[track_caller]
    pub fn header_u64(&self, name: &str) -> u64 {
        let raw =
            self.header(name).unwrap_or_else(|| panic!("no {name} header on a {} reply: {}", self.status, self.text));
        raw.parse().unwrap_or_else(|_| panic!("{name}: {raw:?} is not a whole number"))
    }

    /// Asserts a success: exactly `{"success": true, "data": ...}`; returns `data`.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.text);
        let body = self.json();
        assert_eq!(keys_of(&body), ["data", "success"], "success envelope has other fields: {body}");
        assert_eq!(body["success"], true, "{body}");
        body["data"].clone()
    }

    /// Asserts a failure with this status and reason, in exactly the
    /// envelope `{success: false, data: {}, error: {code, reason, message}}`.
    #[track_caller]
    pub fn err(&self, status: u16, reason: &str) -> &Self {
        assert_eq!(
            (self.status, self.json()["error"]["reason"].as_str()),
            (status, Some(reason)),
            "expected {status} {reason}: {}",
            self.text
        );
        assert_error_envelope(&self.json(), status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "content-type {content_type:?}");
        self
    }

    /// A failure's message (after [`Reply::err`]).
    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().expect("an error message").to_owned()
    }

    /// Asserts 502 `discord_error` in exactly the error envelope; returns the message.
    #[track_caller]
    pub fn discord_error(&self) -> String {
        self.err(502, "discord_error").message()
    }

    #[track_caller]
    pub fn has_rate_limit_headers(&self) -> &Self {
        for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            self.header_u64(name);
        }
        self
    }
}

/// Asserts `body` is exactly the SPEC §6 error envelope for `status`.
#[track_caller]
pub fn assert_error_envelope(body: &Value, status: u16) {
    assert_eq!(keys_of(body), ["data", "error", "success"], "error envelope has other fields: {body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["data"], json!({}), "{body}");
    assert_eq!(keys_of(&body["error"]), ["code", "message", "reason"], "error object has other fields: {body}");
    assert_eq!(body["error"]["code"], status, "error.code is the HTTP status: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error.message is a non-empty string: {body}");
}

/// An object's keys, sorted.
pub fn keys_of(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    keys
}

pub async fn send(req: RequestBuilder) -> Reply {
    let started = Instant::now();
    let resp = req.send().await.expect("the listener answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = super::text(resp).await;
    Reply { status, headers, text, took: started.elapsed() }
}

/// GET with a key.
pub async fn get(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.get(app.url(path)).bearer_auth(token)).await
}

/// GET without a key.
pub async fn get_anon(app: &App, path: &str) -> Reply {
    send(app.http.get(app.url(path))).await
}

pub async fn put(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.put(app.url(path)).bearer_auth(token)).await
}

pub async fn put_json(app: &App, path: &str, token: &str, body: &Value) -> Reply {
    send(app.http.put(app.url(path)).bearer_auth(token).json(body)).await
}

pub async fn delete(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.delete(app.url(path)).bearer_auth(token)).await
}
