//! `magicauth-server apps …`: app management. Output goes to stdout, logs to stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::auth::{DEFAULT_BURST, DEFAULT_SESSION_TTL, DEFAULT_TOKEN_TTL};
use crate::clock::{Clock, SystemClock, to_datetime};
use crate::config::{AppsCommand, CreateApp};
use crate::domain::{AppKey, RedirectAllowList, format_duration, new_app_id};
use crate::store::{AppRecord, NewApp, Store};

#[derive(Serialize)]
struct Credentials<'a> {
    app_id: &'a str,
    app_key: &'a str,
}

#[derive(Serialize)]
struct AppListing<'a> {
    app_id: &'a str,
    name: &'a str,
    plan: &'a str,
    status: &'a str,
    burst: u32,
    monthly_limit: Option<u32>,
    token_ttl: String,
    session_ttl: String,
    redirect_urls: &'a [String],
    created_at: String,
}

/// Runs one `apps` subcommand, writing its result to `out`.
pub async fn run(store: &dyn Store, command: AppsCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    match command {
        AppsCommand::Create(create) => {
            let json = create.json;
            let (record, key) = new_app(create, now)?;
            store
                .create_app(&NewApp {
                    record: record.clone(),
                    key_hash: key.hash(),
                })
                .await
                .context("could not store the app")?;
            print_credentials(out, &record.id, &key, json)?;
            if !json {
                eprintln!("The app_key is shown only this once: store it now (e.g. as MAGICAUTH_APP_KEY).");
            }
        }
        AppsCommand::List { json } => {
            let apps = store.list_apps().await?;
            let listings: Vec<AppListing<'_>> = apps.iter().map(listing).collect();
            if json {
                writeln!(out, "{}", serde_json::to_string(&listings)?)?;
            } else {
                print_table(out, &listings)?;
            }
        }
        AppsCommand::Disable { id } => {
            if !store.set_app_disabled(&id, true, now).await? {
                bail!("no app with id `{id}`");
            }
            writeln!(out, "{id} disabled")?;
        }
        AppsCommand::Enable { id } => {
            if !store.set_app_disabled(&id, false, now).await? {
                bail!("no app with id `{id}`");
            }
            writeln!(out, "{id} enabled")?;
        }
        AppsCommand::RotateKey { id, json } => {
            let key = AppKey::generate();
            if !store.rotate_app_key(&id, &key.hash(), now).await? {
                bail!("no app with id `{id}`");
            }
            print_credentials(out, &id, &key, json)?;
            if !json {
                eprintln!("The old key no longer works. The new app_key is shown only this once.");
            }
        }
    }
    Ok(())
}

fn new_app(create: CreateApp, now: i64) -> anyhow::Result<(AppRecord, AppKey)> {
    let name = create.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 100 characters without control characters");
    }
    // Validated and normalised now, so the server never meets a bad entry.
    let allow_list =
        RedirectAllowList::parse_all(&create.redirect_urls).map_err(|e| anyhow::anyhow!("--redirect-url: {e}"))?;
    let secs = |d: Option<Duration>, default: Duration| -> anyhow::Result<i64> {
        i64::try_from(d.unwrap_or(default).as_secs()).context("duration too large")
    };
    let record = AppRecord {
        id: new_app_id(),
        name: name.to_owned(),
        plan: create.plan,
        burst: create.burst.unwrap_or(DEFAULT_BURST),
        monthly_limit: create.monthly_limit,
        token_ttl_s: secs(create.token_ttl, DEFAULT_TOKEN_TTL)?,
        session_ttl_s: secs(create.session_ttl, DEFAULT_SESSION_TTL)?,
        redirect_urls: allow_list.iter().map(|u| u.as_str().to_owned()).collect(),
        disabled: false,
        created_at: now,
    };
    Ok((record, AppKey::generate()))
}

fn print_credentials(out: &mut (dyn Write + Send), app_id: &str, key: &AppKey, json: bool) -> anyhow::Result<()> {
    if json {
        let line = serde_json::to_string(&Credentials {
            app_id,
            app_key: key.expose(),
        })?;
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "app_id:  {app_id}\napp_key: {}", key.expose())?;
    }
    Ok(())
}

fn listing(app: &AppRecord) -> AppListing<'_> {
    let ttl = |s: i64| format_duration(Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    AppListing {
        app_id: &app.id,
        name: &app.name,
        plan: app.plan.as_str(),
        status: if app.disabled { "disabled" } else { "enabled" },
        burst: app.burst,
        monthly_limit: app.monthly_limit,
        token_ttl: ttl(app.token_ttl_s),
        session_ttl: ttl(app.session_ttl_s),
        redirect_urls: &app.redirect_urls,
        created_at: to_datetime(app.created_at - app.created_at.rem_euclid(1000))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

fn print_table(out: &mut (dyn Write + Send), apps: &[AppListing<'_>]) -> anyhow::Result<()> {
    let rows: Vec<[String; 8]> = apps
        .iter()
        .map(|a| {
            [
                a.app_id.to_owned(),
                a.name.to_owned(),
                a.plan.to_owned(),
                a.status.to_owned(),
                a.burst.to_string(),
                a.monthly_limit.map_or_else(|| "-".to_owned(), |m| m.to_string()),
                format!("{}/{}", a.token_ttl, a.session_ttl),
                a.redirect_urls.join(" "),
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "PLAN",
        "STATUS",
        "BURST",
        "MONTHLY",
        "TTL/SESSION",
        "REDIRECT URLS",
    ];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
