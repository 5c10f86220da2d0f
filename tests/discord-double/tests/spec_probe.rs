use discord_double::schema::*;
use serde_json::json;
#[test]
fn probe() {
    let t = std::time::Instant::now();
    let SpecStatus::Loaded(spec) = spec_status() else { panic!("no spec") };
    println!("load {:?} routes {}", t.elapsed(), spec.routes().len());
    let t = std::time::Instant::now();
    let e = spec.validate_request("create_message", &json!({"content": "hi", "embeds": "nope"}));
    println!("compile+validate create_message {:?}: {:#?}", t.elapsed(), e);
    let t = std::time::Instant::now();
    let e = spec
        .validate_request("create_interaction_response", &json!({"type": 4, "data": {"content": "hi", "flags": 64}}));
    println!("callback {:?}: {:#?}", t.elapsed(), e);
    let e =
        spec.validate_request("create_interaction_response", &json!({"type": 4, "data": {"content": 5, "flags": 64}}));
    println!("callback bad {:?}: {:#?}", t.elapsed(), e);
    let t = std::time::Instant::now();
    let e = spec.validate_response("create_message", 200, Some(&json!({"id": "1"})));
    println!("response {:?}: {:#?}", t.elapsed(), e);
    let e = spec.validate_response("create_message", 404, Some(&json!({"code": 10003, "message": "Unknown Channel"})));
    println!("404 {:?}", e);
    let e = spec.validate_response("create_interaction_response", 204, None);
    println!("204 {:?}", e);
}
