//! The app's HTML, rendered on the server. Every value that comes from a
//! user, a URL or the MagicAuth API goes through [`escape`].

use std::time::Duration;

use chrono::DateTime;

use crate::session::Session;

/// A message shown above a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Problem(String),
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · MagicAuth example</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #222; }}
input[type=email] {{ width: 100%; padding: .5rem; margin: .5rem 0 1rem; box-sizing: border-box; }}
button {{ padding: .5rem 1.25rem; }}
.notice {{ padding: .75rem 1rem; border-radius: .25rem; background: #eef5ff; }}
.problem {{ background: #fff0f0; }}
.muted {{ color: #666; font-size: .9rem; }}
</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

fn notice_html(notice: Option<&Notice>) -> String {
    match notice {
        Some(Notice::Info(text)) => format!(r#"<p class="notice" role="status">{}</p>"#, escape(text)),
        Some(Notice::Problem(text)) => format!(r#"<p class="notice problem" role="alert">{}</p>"#, escape(text)),
        None => String::new(),
    }
}

/// The form that asks for an address and POSTs it to `/send-link`.
fn email_form(email: &str, button: &str) -> String {
    format!(
        r#"<form method="post" action="/send-link">
<label for="email">Email address</label>
<input id="email" type="email" name="email" value="{}" autocomplete="email" required>
<button type="submit">{}</button>
</form>"#,
        escape(email),
        escape(button),
    )
}

/// `GET /`: the sign-in form.
pub fn sign_in(notice: Option<&Notice>, email: &str, signed_in_as: Option<&str>) -> String {
    let signed_in = signed_in_as
        .map(|email| {
            format!(
                r#"<p class="notice">You are signed in as <strong>{}</strong>. <a href="/dashboard">Go to your dashboard</a>.</p>"#,
                escape(email)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>
{signed_in}{notice}
<p>Enter your email address and we will send you a link to sign in. No password needed.</p>
{form}"#,
        notice = notice_html(notice),
        form = email_form(email, "Email me a sign-in link"),
    );
    layout("Sign in", &body)
}

/// After `POST /send-link`: the same words whether or not the address is known.
pub fn check_email(email: &str, expires_in: Duration) -> String {
    let body = format!(
        r#"<h1>Check your email</h1>
<p>If <strong>{email}</strong> can receive email, a sign-in link is on its way.
It works once, within {lifetime}.</p>
<p class="muted">Nothing arrived? Check your spam folder, or <a href="/">ask for another link</a>.</p>"#,
        email = escape(email),
        lifetime = escape(&describe_duration(expires_in)),
    );
    layout("Check your email", &body)
}

/// `GET /auth/callback`: a button, so that only a person (not a link scanner) uses the token.
pub fn continue_sign_in(token: &str) -> String {
    let body = format!(
        r#"<h1>Finish signing in</h1>
<p>Press the button to sign in.</p>
<form method="post" action="/auth/callback">
<input type="hidden" name="magic_token" value="{}">
<button type="submit" autofocus>Continue</button>
</form>
<p class="muted">Why this step? Email security scanners open the links in messages to check them.
Signing in only when you press the button keeps them from using up your single-use link.</p>"#,
        escape(token),
    );
    layout("Finish signing in", &body)
}

/// A link that cannot sign anyone in (expired, used, invalid or incomplete), with a way to get a new one.
pub fn link_problem(title: &str, explanation: &str) -> String {
    let body = format!(
        r#"<h1>{}</h1>
<p>{}</p>
<p>Enter your email address to get a new sign-in link.</p>
{}"#,
        escape(title),
        escape(explanation),
        email_form("", "Send me a new link"),
    );
    layout(title, &body)
}

/// `GET /dashboard`.
pub fn dashboard(session: &Session) -> String {
    let until = DateTime::from_timestamp(session.expires_at, 0)
        .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Dashboard</h1>
<p>You are signed in as <strong>{email}</strong> (user {user_id}).</p>
<p class="muted">This session lasts until {until}.</p>
<form method="post" action="/logout">
<button type="submit">Sign out</button>
</form>"#,
        email = escape(&session.email),
        user_id = session.user_id,
        until = escape(&until),
    );
    layout("Dashboard", &body)
}

/// Anything else that went wrong: a plain message, never an error's details.
pub fn problem(title: &str, message: &str) -> String {
    let body = format!(
        r#"<h1>{}</h1>
<p>{}</p>
<p><a href="/">Back to sign-in</a></p>"#,
        escape(title),
        escape(message),
    );
    layout(title, &body)
}

/// "15 minutes", "30 seconds", "1 hour".
pub fn describe_duration(duration: Duration) -> String {
    let secs = duration.as_secs().max(1);
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if secs < 60 {
        plural(secs, "second")
    } else if secs < 3600 {
        plural(secs.div_ceil(60), "minute")
    } else {
        plural(secs.div_ceil(3600), "hour")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#x27;y&#x27;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn user_input_is_escaped_in_every_page() {
        let evil = r#""><script>alert(1)</script>"#;
        let session = Session {
            user_id: 1,
            email: evil.into(),
            expires_at: 0,
            id: "x".into(),
        };
        for page in [
            sign_in(Some(&Notice::Problem(evil.into())), evil, Some(evil)),
            check_email(evil, Duration::from_secs(900)),
            continue_sign_in(evil),
            link_problem(evil, evil),
            dashboard(&session),
            problem(evil, evil),
        ] {
            assert!(!page.contains("<script>"), "{page}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe_duration(Duration::from_secs(900)), "15 minutes");
        assert_eq!(describe_duration(Duration::from_secs(61)), "2 minutes");
        assert_eq!(describe_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(describe_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(describe_duration(Duration::ZERO), "1 second");
        assert_eq!(describe_duration(Duration::from_secs(7200)), "2 hours");
    }
}
