//! Configuration (builder and environment) and keeping the app key out of output.

use std::time::Duration;

use magicauth::{Client, DEFAULT_BASE_URL, Error};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{
    APP_KEY, api_error, assert_no_key, builder, client, closed_port_base_url, received, send_link_ok,
};

const APP_KEY_VAR: &str = "MAGICAUTH_APP_KEY";
const BASE_URL_VAR: &str = "MAGICAUTH_BASE_URL";
/// Set only in the child processes of `environment_configures_the_client`: which scenario to run.
const SCENARIO_VAR: &str = "MAGICAUTH_TEST_ENV_SCENARIO";
const TEST_NAME: &str = "config::environment_configures_the_client";

fn assert_configuration_error(result: Result<Client, Error>, what: &str) {
    match result {
        Err(error @ Error::Configuration(_)) => {
            assert_eq!(error.code(), "configuration", "{what}");
            assert_eq!(error.status(), None, "{what}");
            assert_no_key(&format!("{error} {error:?}"));
        }
        Err(other) => panic!("{what}: expected Configuration, got {other:?}"),
        Ok(client) => panic!("{what}: expected Configuration, got {client:?}"),
    }
}

/// The environment is process-global, and the workspace forbids `unsafe` (so no
/// `std::env::set_var`) in tests too. This test therefore runs this same test binary
/// again, once per scenario, as a child process with exactly the MAGICAUTH_* variables
/// the scenario needs; the child runs `env_scenario` and prints a marker on success.
/// No other test reads the environment.
#[tokio::test]
async fn environment_configures_the_client() {
    if let Ok(scenario) = std::env::var(SCENARIO_VAR) {
        env_scenario(&scenario).await;
        println!("ENV-SCENARIO-OK {scenario}");
        return;
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(send_link_ok(600))
        .mount(&server)
        .await;
    let api = format!("{}/api", server.uri());
    let scenarios: [(&str, Option<&str>, Option<&str>); 6] = [
        ("missing", None, None),
        ("blank-key", Some("   "), Some(api.as_str())),
        ("key-only", Some(APP_KEY), None),
        ("key-and-url", Some(APP_KEY), Some(api.as_str())),
        ("ftp-url", Some(APP_KEY), Some("ftp://files.example.com/api")),
        ("unparsable-url", Some(APP_KEY), Some("not a url")),
    ];
    for (scenario, key, base_url) in scenarios {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env_remove(APP_KEY_VAR)
            .env_remove(BASE_URL_VAR)
            .env(SCENARIO_VAR, scenario);
        if let Some(key) = key {
            child.env(APP_KEY_VAR, key);
        }
        if let Some(url) = base_url {
            child.env(BASE_URL_VAR, url);
        }
        let output = child.output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains(&format!("ENV-SCENARIO-OK {scenario}")),
            "scenario {scenario} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        assert_no_key(&stdout);
        assert_no_key(&stderr);
    }
    // What the key-and-url scenario sent, in order: from_env's key, then Client::new's.
    let requests = received(&server).await;
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["app_key"], APP_KEY);
    assert_eq!(bodies[0]["email"], "env@example.com");
    assert_eq!(bodies[1]["app_key"], "mk_explicit_key");
    assert_eq!(bodies[1]["email"], "new@example.com");
}

/// One scenario of `environment_configures_the_client`, in a child process whose
/// MAGICAUTH_* variables the parent set.
async fn env_scenario(scenario: &str) {
    let env_url = std::env::var(BASE_URL_VAR).ok();
    match scenario {
        "missing" => assert_configuration_error(Client::from_env(), "no MAGICAUTH_APP_KEY"),
        "blank-key" => assert_configuration_error(Client::from_env(), "blank MAGICAUTH_APP_KEY"),
        "key-only" => {
            let client = Client::from_env().unwrap();
            assert_eq!(client.base_url(), DEFAULT_BASE_URL);
            assert_no_key(&format!("{client:?}"));
            // Without from_env(), the builder ignores the environment.
            assert_configuration_error(Client::builder().build(), "builder without key or from_env");
        }
        "key-and-url" => {
            let api = env_url.unwrap();
            let client = Client::from_env().unwrap();
            assert_eq!(client.base_url(), api);
            assert_no_key(&format!("{client:?}"));
            assert_eq!(client.send_link("env@example.com", None).await.unwrap().expires_in, 600);
            // Client::new takes the key, and the base URL from the environment.
            let explicit = Client::new("mk_explicit_key").unwrap();
            assert_eq!(explicit.base_url(), api);
            explicit.send_link("new@example.com", None).await.unwrap();
            // Builder values win over the environment.
            let built = Client::builder()
                .base_url("http://127.0.0.1:9/api")
                .app_key("mk_builder_key")
                .from_env()
                .build()
                .unwrap();
            assert_eq!(built.base_url(), "http://127.0.0.1:9/api");
        }
        "ftp-url" => assert_configuration_error(Client::from_env(), "ftp base URL"),
        "unparsable-url" => assert_configuration_error(Client::from_env(), "unparsable base URL"),
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn the_builder_checks_its_configuration() {
    assert_configuration_error(Client::builder().base_url("http://127.0.0.1:9/api").build(), "no key");
    assert_configuration_error(Client::builder().app_key("").build(), "empty key");
    assert_configuration_error(Client::builder().app_key("k").base_url("ftp://x/api").build(), "ftp");
    assert_configuration_error(Client::builder().app_key("k").base_url("/api").build(), "relative");
    let client = Client::builder()
        .app_key("  mk_padded  ")
        .base_url(" https://auth.example.com/api/ ")
        .build()
        .unwrap();
    assert_eq!(client.base_url(), "https://auth.example.com/api");
    assert_eq!(
        Client::builder().app_key("k").build().unwrap().base_url(),
        DEFAULT_BASE_URL
    );
}

#[test]
fn debug_output_never_shows_the_app_key() {
    let client = Client::builder()
        .app_key(APP_KEY)
        .base_url("http://127.0.0.1:9/api")
        .timeout(Duration::from_secs(3))
        .max_retries(5)
        .build()
        .unwrap();
    let shown = format!("{client:?} {client:#?}");
    assert_no_key(&shown);
    assert!(shown.contains("http://127.0.0.1:9/api"), "{shown}");
    let builder = Client::builder().app_key(APP_KEY).base_url("http://127.0.0.1:9/api");
    assert_no_key(&format!("{builder:?} {builder:#?}"));
}

#[tokio::test]
async fn errors_never_show_the_app_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(api_error(401, "invalid_app_key", "Invalid app_key"))
        .mount(&server)
        .await;
    let mut errors = vec![
        client(&server).send_link("u@example.com", None).await.unwrap_err(),
        client(&server).verify_token("tok").await.unwrap_err(),
    ];
    assert!(matches!(errors[0], Error::InvalidAppKey(_)), "{:?}", errors[0]);

    let unreachable = Client::builder()
        .base_url(closed_port_base_url())
        .app_key(APP_KEY)
        .retry_base_delay(Duration::from_millis(1))
        .max_retries(1)
        .build()
        .unwrap();
    errors.push(unreachable.send_link("u@example.com", None).await.unwrap_err());
    errors.push(unreachable.verify_token("tok").await.unwrap_err());
    errors.push(unreachable.verify_session("a.b.c").await.unwrap_err());
    assert!(matches!(errors[2], Error::Connection { .. }), "{:?}", errors[2]);

    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900).set_delay(Duration::from_millis(300)))
        .mount(&slow)
        .await;
    let timing_out = builder(&slow)
        .timeout(Duration::from_millis(50))
        .max_retries(0)
        .build()
        .unwrap();
    errors.push(timing_out.send_link("u@example.com", None).await.unwrap_err());
    assert!(
        matches!(errors.last(), Some(Error::Timeout { .. })),
        "{:?}",
        errors.last()
    );

    for error in &errors {
        let mut shown = format!("{error} | {error:?} | {error:#?}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            shown.push_str(&format!(" | {cause} | {cause:?}"));
            source = cause.source();
        }
        assert_no_key(&shown);
    }
}
