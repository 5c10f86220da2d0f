//! Without Discord's OpenAPI file the double still runs (one notice, no validation), except
//! under `CI=true`, where starting it fails. Own test binary: the spec is loaded once per
//! process.

use discord_double::{Double, DoubleConfig, SpecStatus};

#[tokio::test]
async fn absent_spec_skips_validation_but_fails_under_ci() {
    std::env::set_var("DISCORD_OPENAPI_PATH", "/nonexistent/openapi.json");
    std::env::set_var("CI", "true");
    let err = Double::start(DoubleConfig::demo()).await.unwrap_err();
    assert!(err.to_string().contains("CI=true"), "{err}");
    assert!(matches!(discord_double::schema::spec_status(), SpecStatus::Absent(_)));

    std::env::set_var("CI", "false");
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    assert!(!double.validating());
    let r = reqwest::Client::new().get(format!("{}/gateway", double.api_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    double.assert_no_violations();
}
