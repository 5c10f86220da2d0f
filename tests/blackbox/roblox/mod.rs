//! The Roblox client (`clients/roblox/GuildKey.lua`) in the real Luau VM
//! (mlua, Luau built from source), against the real listener and its bot on
//! the Discord double.
//!
//! Roblox's services are replaced by what the module takes as options: an
//! HTTP function with `HttpService:RequestAsync`'s shape (reqwest, recording
//! every exchange), a JSON codec that behaves like `HttpService:JSONEncode` /
//! `JSONDecode` (an empty table encodes as `[]`, JSON null decodes to nil),
//! a clock the test moves, and a sleep that records each delay and really
//! waits only for short ones.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlua::{Function, Lua, Table, Value as LuaValue};
use serde_json::{json, Map, Value};
use support::{ids, spawn_app, spawn_app_with, App, Options};

mod batching;
mod client;
mod linkers;
mod push_subscriber;
mod world;

const DEMO: u64 = ids::DEMO_GUILD_ID;
const MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/roblox/GuildKey.lua");
/// SPEC §6: a key made by the CLI (another process) is live within 1 s.
const CROSS_PROCESS: Duration = Duration::from_millis(1200);

/// One exchange the module made through the injected HTTP function.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    /// The URL without the listener's base.
    path: String,
    body: Option<String>,
    /// `Authorization` was exactly `Bearer <the key>`.
    bearer_ok: bool,
    /// 0 when the request failed before an answer.
    status: u16,
    retry_after: Option<f64>,
}

#[derive(Default)]
struct Recorder {
    exchanges: Vec<Exchange>,
    sleeps: Vec<f64>,
    /// Answer this many requests with a synthetic 503 (an HTML page, as a
    /// reverse proxy in front of the listener would) before passing through.
    fail_next: usize,
    /// Sleeps up to this long really wait; longer ones are only recorded.
    real_sleep_max: f64,
    /// The clock the module reads, in seconds.
    now: f64,
}

struct Harness {
    lua: Lua,
    module: Table,
    options: Table,
    base: String,
    state: Arc<Mutex<Recorder>>,
}

impl Harness {
    /// Loads the module into a fresh Luau VM with Roblox's services replaced
    /// by recording fakes; requests go to `base` with `key` expected as the
    /// bearer token.
    fn new(app: &App, key: &str) -> Self {
        Self::with_base(app, &app.base, key)
    }

    fn with_base(app: &App, base: &str, key: &str) -> Self {
        Self::with_http(app.http.clone(), base, key)
    }

    /// The module in a fresh VM, talking to whatever listens at `base` (the
    /// listener, or nothing) through `http`.
    fn with_http(http: reqwest::Client, base: &str, key: &str) -> Self {
        let lua = Lua::new();
        let state = Arc::new(Mutex::new(Recorder { now: 1000.0, ..Recorder::default() }));
        let options = lua.create_table().unwrap();
        options.set("request", http_function(&lua, http, base, key, state.clone())).unwrap();
        options
            .set("jsonEncode", lua.create_function(|_, v: LuaValue| Ok(lua_to_json(&v)?.to_string())).unwrap())
            .unwrap();
        options
            .set(
                "jsonDecode",
                lua.create_function(|lua, text: String| {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| mlua::Error::runtime(format!("Can't parse JSON: {e}")))?;
                    json_to_lua(lua, &v)
                })
                .unwrap(),
            )
            .unwrap();
        let clock = state.clone();
        options.set("clock", lua.create_function(move |_, ()| Ok(clock.lock().unwrap().now)).unwrap()).unwrap();
        let sleeper = state.clone();
        let sleep = lua
            .create_function(move |_, seconds: f64| {
                let real = {
                    let mut st = sleeper.lock().unwrap();
                    st.sleeps.push(seconds);
                    seconds <= st.real_sleep_max
                };
                if real {
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs_f64(seconds)));
                }
                Ok(())
            })
            .unwrap();
        options.set("sleep", sleep).unwrap();

        let source = std::fs::read_to_string(MODULE).expect("read GuildKey.lua");
        let module: Table =
            lua.load(source).set_name("@clients/roblox/GuildKey.lua").eval().expect("load GuildKey.lua");
        lua.globals().set("GuildKey", module.clone()).unwrap();
        lua.globals().set("API_KEY", key).unwrap();
        Self { lua, module, options, base: base.to_owned(), state }
    }

    /// Options for `GuildKey.new`: the fakes plus `extra` (a Luau table
    /// constructor's fields, e.g. `cacheTtl = 2`).
    fn options(&self, extra: &str) -> Table {
        let opts = self.lua.create_table().unwrap();
        for pair in self.options.pairs::<LuaValue, LuaValue>() {
            let (k, v) = pair.unwrap();
            opts.set(k, v).unwrap();
        }
        let extra: Table = self.lua.load(format!("return {{ {extra} }}")).eval().expect("extra options");
        for pair in extra.pairs::<LuaValue, LuaValue>() {
            let (k, v) = pair.unwrap();
            opts.set(k, v).unwrap();
        }
        opts
    }

    /// `GuildKey.new(base, API_KEY, options)`, or its error message.
    fn try_new(&self, extra: &str) -> Result<Table, String> {
        let new: Function = self.module.get("new").unwrap();
        let key: String = self.lua.globals().get("API_KEY").unwrap();
        new.call::<Table>((self.base.as_str(), key, self.options(extra))).map_err(|e| e.to_string())
    }

    /// Makes the global `client`.
    fn client(&self, extra: &str) -> &Self {
        let client = self.try_new(extra).expect("GuildKey.new");
        self.lua.globals().set("client", client).unwrap();
        self
    }

    /// Runs Luau code and returns its value as JSON. A Luau error fails the
    /// test: the module must answer API errors with results, never throw.
    #[track_caller]
    fn eval(&self, code: &str) -> Value {
        let value: LuaValue = self.lua.load(code).eval().unwrap_or_else(|e| panic!("{code} threw: {e}"));
        lua_to_json(&value).unwrap()
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.state.lock().unwrap().exchanges.clone()
    }

    fn paths(&self) -> Vec<String> {
        self.exchanges().iter().map(|e| format!("{} {}", e.method, e.path)).collect()
    }

    fn sleeps(&self) -> Vec<f64> {
        self.state.lock().unwrap().sleeps.clone()
    }

    fn clear(&self) {
        let mut st = self.state.lock().unwrap();
        st.exchanges.clear();
        st.sleeps.clear();
    }

    fn advance_clock(&self, seconds: f64) {
        self.state.lock().unwrap().now += seconds;
    }

    fn set_real_sleep_max(&self, seconds: f64) {
        self.state.lock().unwrap().real_sleep_max = seconds;
    }

    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }
}

/// Roblox runs each event handler in a thread of its own and `task.wait`
/// yields that thread. `runConcurrently({f, g, ...})` starts each function
/// in a coroutine (as players joining together), then wakes the sleeping
/// threads, oldest first, until none is left, and returns each function's
/// value. A client given `sleep = yieldingSleep` waits that way (each
/// sleep is still recorded).
const THREADS: &str = r#"
sleepers = {}
function yieldingSleep(seconds)
    recordSleep(seconds)
    table.insert(sleepers, coroutine.running())
    coroutine.yield()
end
function runConcurrently(fns)
    local results = {}
    local function resume(co)
        local ok, err = coroutine.resume(co)
        if not ok then
            error(err, 0)
        end
    end
    for i, fn in fns do
        resume(coroutine.create(function()
            results[i] = fn()
        end))
    end
    while #sleepers > 0 do
        resume(table.remove(sleepers, 1))
    end
    for i = 1, #fns do
        assert(results[i] ~= nil, `thread {i} never finished`)
    end
    return results
end
"#;

impl Harness {
    /// Defines `yieldingSleep` and `runConcurrently` (see [`THREADS`]).
    fn with_threads(&self) -> &Self {
        self.lua.globals().set("recordSleep", self.options.get::<Function>("sleep").unwrap()).unwrap();
        self.lua.load(THREADS).set_name("threads").exec().expect("the thread helpers");
        self
    }
}

/// `HttpService:RequestAsync` over reqwest: takes `{Url, Method, Headers,
/// Body}`, returns `{Success, StatusCode, StatusMessage, Headers, Body}`, and
/// throws when no answer comes (as RequestAsync does).
fn http_function(lua: &Lua, http: reqwest::Client, base: &str, key: &str, state: Arc<Mutex<Recorder>>) -> Function {
    let handle = tokio::runtime::Handle::current();
    let base = base.to_owned();
    let bearer = format!("Bearer {key}");
    lua.create_function(move |lua, req: Table| {
        let url: String = req.get("Url")?;
        let method: String = req.get("Method")?;
        let body: Option<String> = req.get("Body")?;
        let mut headers = Vec::new();
        if let Some(h) = req.get::<Option<Table>>("Headers")? {
            for pair in h.pairs::<String, String>() {
                headers.push(pair?);
            }
        }
        let mut exchange = Exchange {
            method: method.clone(),
            path: url.strip_prefix(&base).unwrap_or(&url).to_owned(),
            body: body.clone(),
            bearer_ok: headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("authorization") && *v == bearer),
            status: 0,
            retry_after: None,
        };
        let out = lua.create_table()?;
        let out_headers = lua.create_table()?;
        let synthetic = {
            let mut st = state.lock().unwrap();
            let fail = st.fail_next > 0;
            st.fail_next = st.fail_next.saturating_sub(1);
            fail
        };
        if synthetic {
            exchange.status = 503;
            out.set("StatusCode", 503)?;
            out.set("StatusMessage", "Service Unavailable")?;
            out_headers.set("content-type", "text/html")?;
            out.set("Body", "<html><body>503 Service Unavailable</body></html>")?;
        } else {
            let mut builder = http.request(method.parse().map_err(mlua::Error::external)?, &url);
            for (k, v) in &headers {
                builder = builder.header(k, v);
            }
            if let Some(b) = body {
                builder = builder.body(b);
            }
            let sent = tokio::task::block_in_place(|| {
                handle.block_on(async move {
                    let resp = builder.send().await?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    Ok::<_, reqwest::Error>((status, headers, resp.text().await?))
                })
            });
            let (status, resp_headers, text) = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    state.lock().unwrap().exchanges.push(exchange);
                    return Err(mlua::Error::runtime(format!("HttpError: ConnectFail ({e})")));
                }
            };
            exchange.status = status.as_u16();
            exchange.retry_after =
                resp_headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            for (name, value) in &resp_headers {
                out_headers.set(name.as_str(), value.to_str().unwrap_or_default())?;
            }
            out.set("StatusCode", status.as_u16())?;
            out.set("StatusMessage", status.canonical_reason().unwrap_or_default())?;
            out.set("Body", text)?;
        }
        out.set("Success", (200..300).contains(&exchange.status))?;
        out.set("Headers", out_headers)?;
        state.lock().unwrap().exchanges.push(exchange);
        Ok(out)
    })
    .unwrap()
}

/// A Luau value as JSON, the way `HttpService:JSONEncode` reads tables: a
/// sequence is an array, an empty table is `[]`, anything else an object.
fn lua_to_json(v: &LuaValue) -> mlua::Result<Value> {
    Ok(match v {
        LuaValue::Nil => Value::Null,
        LuaValue::Boolean(b) => Value::Bool(*b),
        LuaValue::Integer(i) => json!(i),
        LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => json!(*n as i64),
        LuaValue::Number(n) => json!(n),
        LuaValue::String(s) => Value::String(s.to_str()?.to_owned()),
        LuaValue::Table(t) => {
            let pairs: Vec<(LuaValue, LuaValue)> = t.pairs().collect::<mlua::Result<_>>()?;
            let len = t.raw_len();
            if pairs.len() == len {
                (1..=len).map(|i| lua_to_json(&t.raw_get(i)?)).collect::<mlua::Result<Vec<_>>>()?.into()
            } else {
                let mut map = Map::new();
                for (k, v) in pairs {
                    let LuaValue::String(k) = k else {
                        return Err(mlua::Error::runtime("JSON object keys must be strings"));
                    };
                    map.insert(k.to_str()?.to_owned(), lua_to_json(&v)?);
                }
                Value::Object(map)
            }
        }
        other => return Err(mlua::Error::runtime(format!("cannot encode a {} as JSON", other.type_name()))),
    })
}

/// JSON as a Luau value, like `HttpService:JSONDecode` (null becomes nil).
fn json_to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => LuaValue::Number(n.as_f64().unwrap_or_default()),
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                t.raw_set(k.as_str(), json_to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
    })
}

/// Asserts a failure result: exactly `ok=false` with this status and reason,
/// and a non-empty message.
#[track_caller]
fn assert_failure(result: &Value, status: u16, reason: &str) {
    assert_eq!(
        (&result["ok"], &result["status"], &result["reason"]),
        (&json!(false), &json!(status), &json!(reason)),
        "{result}"
    );
    assert!(result["message"].as_str().is_some_and(|m| !m.is_empty()), "a message for people: {result}");
}

fn s(id: u64) -> String {
    id.to_string()
}
