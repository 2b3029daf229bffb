//! Runs the shared contract vectors (`tests/contract/cases.json`) with the Rust SDK.

use std::collections::HashMap;
use std::time::Duration;

use magicauth::{Client, Error};
use magicauth_testbed::Testbed;
use serde_json::{Value, json};

const CASES: &str = include_str!("../../../contract/cases.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_vectors() {
    let doc: Value = serde_json::from_str(CASES).expect("cases.json is JSON");
    assert_eq!(doc["format"], json!(1));
    let testbed = Testbed::start().await.expect("test bed starts");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        run_case(&testbed, case)
            .await
            .unwrap_or_else(|e| panic!("case {name:?}: {e}"));
    }
    testbed.stop().await.unwrap();
}

struct Vars(HashMap<String, Value>);

impl Vars {
    /// Replaces `"$name"` strings, recursively.
    fn subst(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) if s.starts_with('$') => self
                .0
                .get(&s[1..])
                .cloned()
                .ok_or_else(|| format!("unknown variable {s}"))?,
            Value::Array(items) => Value::Array(items.iter().map(|v| self.subst(v)).collect::<Result<_, _>>()?),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.subst(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

async fn run_case(testbed: &Testbed, case: &Value) -> Result<(), String> {
    let flags: Vec<String> = serde_json::from_value(case["app"].clone()).map_err(|e| e.to_string())?;
    let (app_id, app_key) = testbed.create_app(&flags).await.map_err(|e| format!("{e:#}"))?;
    let mut vars = Vars(HashMap::from([
        ("app_id".to_owned(), json!(app_id)),
        ("app_key".to_owned(), json!(app_key)),
        ("server_url".to_owned(), json!(testbed.server_url)),
        ("base_url".to_owned(), json!(testbed.base_url)),
    ]));
    for (i, step) in case["steps"].as_array().ok_or("steps")?.iter().enumerate() {
        run_step(testbed, &mut vars, step)
            .await
            .map_err(|e| format!("step {i} {step}: {e}"))?;
    }
    Ok(())
}

async fn run_step(testbed: &Testbed, vars: &mut Vars, step: &Value) -> Result<(), String> {
    let object = step.as_object().ok_or("a step is an object")?;
    let (action, arg) = object
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "expect" | "save" | "client"))
        .ok_or("no action")?;
    let arg = vars.subst(arg)?;
    let outcome: Result<Value, Error> = match action.as_str() {
        "send_link" | "verify_token" | "verify_session" | "token_from_url" => {
            let client = step_client(testbed, vars, step.get("client"))?;
            sdk_call(&client, action, &arg).await
        }
        "read_mail" => {
            let to = arg["to"].as_str().ok_or("read_mail.to")?;
            let count = arg["count"].as_u64().unwrap_or(1) as usize;
            let (_, mail) = testbed
                .wait_for_mail(to, count, Duration::from_secs(15))
                .await
                .ok_or_else(|| format!("no email #{count} for {to}"))?;
            Ok(serde_json::to_value(mail).map_err(|e| e.to_string())?)
        }
        "create_app" => {
            let flags: Vec<String> = serde_json::from_value(arg).map_err(|e| e.to_string())?;
            let (id, key) = testbed.create_app(&flags).await.map_err(|e| format!("{e:#}"))?;
            Ok(json!({"app_id": id, "app_key": key}))
        }
        "cli" => {
            let args: Vec<String> = serde_json::from_value(arg).map_err(|e| e.to_string())?;
            let out = testbed.cli(&args).await.map_err(|e| format!("{e:#}"))?;
            Ok(serde_json::from_str(out.trim()).unwrap_or_else(|_| json!({"stdout": out})))
        }
        "advance_clock" => {
            testbed.advance_clock(arg.as_i64().ok_or("advance_clock takes seconds")?);
            Ok(json!({}))
        }
        other => return Err(format!("unknown action {other}")),
    };
    let expect = vars.subst(step.get("expect").unwrap_or(&json!({"ok": {}})))?;
    let result = match (&outcome, expect.get("error")) {
        (Ok(result), None) => {
            for (path, want) in expect.get("ok").and_then(Value::as_object).into_iter().flatten() {
                let got = lookup(result, path).ok_or_else(|| format!("result has no {path}: {result}"))?;
                check(path, got, want)?;
            }
            result.clone()
        }
        (Err(error), Some(want)) => {
            check_error(error, want)?;
            return Ok(());
        }
        (Ok(result), Some(want)) => return Err(format!("expected error {want}, got {result}")),
        (Err(error), None) => return Err(format!("unexpected error {error:?}")),
    };
    for (name, path) in step.get("save").and_then(Value::as_object).into_iter().flatten() {
        let path = path.as_str().ok_or("save paths are strings")?;
        let value = lookup(&result, path).ok_or_else(|| format!("cannot save {path} from {result}"))?;
        vars.0.insert(name.clone(), value.clone());
    }
    Ok(())
}

fn step_client(testbed: &Testbed, vars: &Vars, overrides: Option<&Value>) -> Result<Client, String> {
    let overrides = match overrides {
        Some(o) => vars.subst(o)?,
        None => json!({}),
    };
    let mut builder = Client::builder()
        .base_url(overrides["base_url"].as_str().unwrap_or(&testbed.base_url))
        .app_key(
            overrides["app_key"]
                .as_str()
                .or(vars.0["app_key"].as_str())
                .unwrap_or_default(),
        );
    if let Some(n) = overrides["max_retries"].as_u64() {
        builder = builder.max_retries(n as u32);
    }
    builder.build().map_err(|e| e.to_string())
}

async fn sdk_call(client: &Client, action: &str, arg: &Value) -> Result<Value, Error> {
    let text = |key: &str| arg[key].as_str().unwrap_or_default().to_owned();
    Ok(match action {
        "send_link" => {
            let sent = client.send_link(&text("email"), arg["redirect_url"].as_str()).await?;
            json!({"expires_in": sent.expires_in})
        }
        "verify_token" => {
            let v = client.verify_token(&text("token")).await?;
            json!({"user": v.user, "token": v.token, "redirect_url": v.redirect_url})
        }
        "verify_session" => json!(client.verify_session(&text("jwt")).await?),
        "token_from_url" => json!({"value": client.token_from_url(&text("input"))}),
        _ => unreachable!(),
    })
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check(path: &str, got: &Value, want: &Value) -> Result<(), String> {
    let ok = match want.as_str() {
        Some("<timestamp>") => got
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        Some("<string>") => got.as_str().is_some_and(|s| !s.is_empty()),
        Some("<positive-int>") => got.as_i64().is_some_and(|n| n > 0),
        _ if want.is_null() || got.is_null() => want == got,
        _ => scalar_text(got) == scalar_text(want),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{path}: expected {want}, got {got}"))
    }
}

fn check_error(error: &Error, want: &Value) -> Result<(), String> {
    let kind = match error {
        Error::InvalidToken(_) => "InvalidToken",
        Error::TokenAlreadyUsed(_) => "TokenAlreadyUsed",
        Error::TokenExpired(_) => "TokenExpired",
        Error::InvalidAppKey(_) => "InvalidAppKey",
        Error::Forbidden(_) => "Forbidden",
        Error::RateLimited { .. } => "RateLimited",
        Error::InvalidRequest(_) => "InvalidRequest",
        Error::Server(_) => "Server",
        Error::Connection { .. } => "Connection",
        Error::Timeout { .. } => "Timeout",
        Error::InvalidSession(_) => "InvalidSession",
        Error::Configuration(_) => "Configuration",
        _ => "Unknown",
    };
    let got = json!({
        "kind": kind,
        "code": error.code(),
        "status": error.status(),
        "retry_after": error.retry_after().map(|d| d.as_secs()),
    });
    for (field, expected) in want.as_object().ok_or("expect.error is an object")? {
        check(field, &got[field.as_str()], expected).map_err(|e| format!("{e} (error: {error:?})"))?;
    }
    Ok(())
}
