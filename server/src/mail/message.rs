//! The sign-in email: subject, text part and HTML part.

use std::time::Duration;

/// A rendered sign-in email, ready for the outbox.
#[derive(Clone)]
pub struct SignInEmail {
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
}

/// Renders the email for `link`. `sponsor_footer` is added for free-plan apps only
/// (the caller decides).
pub fn render_sign_in_email(
    app_name: &str,
    link: &str,
    lifetime: Duration,
    sponsor_footer: Option<&str>,
) -> SignInEmail {
    let lifetime = human_duration(lifetime);
    let subject = format!("Your sign-in link for {app_name}");
    let mut text_body = format!(
        "Hello,\r\n\r\nUse the link below to sign in to {app_name}:\r\n\r\n{link}\r\n\r\n\
         The link expires in {lifetime} and works once. If you did not ask to sign in, \
         you can ignore this email.\r\n"
    );
    let (name_html, link_html, lifetime_html) = (escape_html(app_name), escape_html(link), escape_html(&lifetime));
    let mut html_body = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif; line-height: 1.5\">\n\
         <p>Hello,</p>\n\
         <p>Use the button below to sign in to <strong>{name_html}</strong>.</p>\n\
         <p><a href=\"{link_html}\" style=\"display: inline-block; padding: 10px 18px; background: #4f46e5; \
         color: #fff; text-decoration: none; border-radius: 6px\">Sign in to {name_html}</a></p>\n\
         <p>Or copy this link into your browser:<br><a href=\"{link_html}\">{link_html}</a></p>\n\
         <p>The link expires in {lifetime_html} and works once. If you did not ask to sign in, \
         you can ignore this email.</p>\n"
    );
    if let Some(footer) = sponsor_footer.map(str::trim).filter(|f| !f.is_empty()) {
        text_body.push_str(&format!("\r\n--\r\n{footer}\r\n"));
        html_body.push_str(&format!(
            "<hr><p style=\"color: #666; font-size: 12px\">{}</p>\n",
            escape_html(footer)
        ));
    }
    html_body.push_str("</body></html>\n");
    SignInEmail {
        subject,
        text_body,
        html_body,
    }
}

/// "15 minutes", "1 hour", "90 seconds", "1 hour 30 minutes".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [(86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, name) in units {
        let n = rest / size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
            rest %= size;
        }
    }
    // "90 seconds" reads better than "1 minute 30 seconds" for short lifetimes.
    if secs < 120 && parts.len() > 1 {
        return format!("{secs} seconds");
    }
    if parts.is_empty() {
        "0 seconds".to_string()
    } else {
        parts.join(" ")
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_carry_the_link_and_lifetime() {
        let link = "https://a.com/cb?x=1&magic_token=abc";
        let mail = render_sign_in_email("Acme <Shop>", link, Duration::from_secs(900), None);
        assert_eq!(mail.subject, "Your sign-in link for Acme <Shop>");
        assert!(mail.text_body.contains(link));
        assert!(mail.text_body.contains("15 minutes"));
        assert!(mail.html_body.contains("https://a.com/cb?x=1&amp;magic_token=abc"));
        assert!(mail.html_body.contains("Acme &lt;Shop&gt;"));
        assert!(mail.html_body.contains("15 minutes"));
    }

    #[test]
    fn footer_only_when_given() {
        let with = render_sign_in_email(
            "A",
            "https://a.com",
            Duration::from_secs(60),
            Some("Sent by <b>Sponsor</b>"),
        );
        assert!(with.text_body.contains("Sent by <b>Sponsor</b>"));
        assert!(with.html_body.contains("Sent by &lt;b&gt;Sponsor&lt;/b&gt;"));
        let without = render_sign_in_email("A", "https://a.com", Duration::from_secs(60), None);
        assert!(!without.text_body.contains("--"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(900)), "15 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1 hour 30 minutes");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
    }
}
