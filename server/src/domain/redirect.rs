//! Redirect URLs (where the magic link sends the user) and the per-app
//! allow-list they are checked against.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::{MagicToken, ValidationError};

const FIELD: &str = "redirect_url";
const MAX_LEN: usize = 2048;
const TOKEN_PARAM: &str = "magic_token";
const SCHEME_MSG: &str = "must be an absolute https URL (http is allowed only for localhost)";

/// A validated, normalised (WHATWG-parsed) redirect URL: `https`, or `http`
/// on a loopback host; no user info; no fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct RedirectUrl(Url);

impl RedirectUrl {
    /// Validates `raw` (surrounding whitespace is trimmed first). Errors use
    /// the field name `redirect_url`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let err = |detail| ValidationError::new(FIELD, detail);
        let raw = raw.trim();
        if raw.chars().count() > MAX_LEN {
            return Err(err("must be at most 2048 characters"));
        }
        // The WHATWG parser silently drops tabs and newlines anywhere in the
        // input; refuse them instead of guessing what the caller meant.
        if raw.chars().any(char::is_control) {
            return Err(err("must not contain control characters"));
        }
        let url = Url::parse(raw).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => err(SCHEME_MSG),
            _ => err("not a valid URL"),
        })?;

        let scheme_ok = match url.scheme() {
            "https" => url.host().is_some(),
            "http" => url.host().is_some_and(|h| is_loopback(&h)),
            _ => false,
        };
        if !scheme_ok {
            return Err(err(SCHEME_MSG));
        }
        // The parser drops an empty user info (`https://@a.com` serialises as
        // `https://a.com/`), so the raw input has to be inspected as well.
        if !url.username().is_empty() || url.password().is_some() || raw_authority_has_at(raw) {
            return Err(err("must not contain user info"));
        }
        // `Some("")` for a bare trailing `#`.
        if url.fragment().is_some() {
            return Err(err("must not contain a fragment"));
        }
        // Normalisation (percent-encoding) can lengthen the URL.
        if url.as_str().len() > MAX_LEN {
            return Err(err("must be at most 2048 characters"));
        }
        Ok(Self(url))
    }

    /// The normalised serialisation.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The link to email: this URL with `magic_token=<token>` appended. Any
    /// existing `magic_token` parameters are removed; the others are kept in
    /// order and byte-for-byte (no re-encoding).
    pub fn with_token(&self, token: &MagicToken) -> String {
        let mut query = String::new();
        for pair in self.0.query().unwrap_or("").split('&') {
            if pair.is_empty() || is_token_param(pair) {
                continue;
            }
            query.push_str(pair);
            query.push('&');
        }
        query.push_str(TOKEN_PARAM);
        query.push('=');
        // base64url: nothing to escape.
        query.push_str(token.expose());

        let mut url = self.0.clone();
        url.set_query(Some(&query));
        url.into()
    }

    /// Whether `candidate` is allowed by this allow-list entry: same scheme,
    /// host and (effective) port, and this entry's path is a prefix of the
    /// candidate's path at a `/` boundary. This entry's query is ignored.
    pub fn allows(&self, candidate: &RedirectUrl) -> bool {
        let (allowed, cand) = (&self.0, &candidate.0);
        allowed.scheme() == cand.scheme()
            && allowed.host() == cand.host()
            && allowed.port_or_known_default() == cand.port_or_known_default()
            && path_within(allowed.path(), cand.path())
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => *d == "localhost",
        Host::Ipv4(ip) => *ip == Ipv4Addr::LOCALHOST,
        Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST,
    }
}

/// Mirrors how the WHATWG parser finds the authority of a special URL: after
/// the scheme's `:`, skip any `/` or `\`, and stop at the next `/`, `\`, `?`
/// or `#`. An `@` in there introduces user info, even an empty one.
fn raw_authority_has_at(raw: &str) -> bool {
    let Some((_, rest)) = raw.split_once(':') else {
        return false;
    };
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    rest[..end].contains('@')
}

/// Whether a raw `key=value` query pair has the key `magic_token` once
/// form-decoded (so `magic%5Ftoken` counts too: the app would decode it).
fn is_token_param(pair: &str) -> bool {
    let key = pair.split_once('=').map_or(pair, |(key, _)| key);
    url::form_urlencoded::parse(key.as_bytes())
        .next()
        .is_some_and(|(key, _)| key == TOKEN_PARAM)
}

fn path_within(allowed: &str, candidate: &str) -> bool {
    let rest = if allowed.ends_with('/') {
        candidate.strip_prefix(allowed)
    } else if candidate == allowed {
        Some("")
    } else {
        candidate.strip_prefix(allowed).filter(|rest| rest.starts_with('/'))
    };
    let Some(rest) = rest else {
        return false;
    };
    // `/app/..%2Fadmin` is a path *below* `/app/` to the URL parser, but an
    // app that decodes `%2F` before resolving `..` would land on `/admin`.
    // Below a restricted prefix, refuse encoded separators altogether.
    allowed == "/" || !has_encoded_separator(rest)
}

fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c")
}

impl fmt::Debug for RedirectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedirectUrl").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RedirectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The redirect URLs an app has registered; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectAllowList(Vec<RedirectUrl>);

impl RedirectAllowList {
    pub fn new(urls: Vec<RedirectUrl>) -> Result<Self, ValidationError> {
        if urls.is_empty() {
            return Err(ValidationError::new(
                FIELD,
                "at least one allowed redirect URL is required",
            ));
        }
        Ok(Self(urls))
    }

    /// Parses every entry; the first invalid one is reported.
    pub fn parse_all<S: AsRef<str>>(raw: &[S]) -> Result<Self, ValidationError> {
        let urls = raw
            .iter()
            .map(|s| RedirectUrl::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(urls)
    }

    pub fn allows(&self, candidate: &RedirectUrl) -> bool {
        self.0.iter().any(|allowed| allowed.allows(candidate))
    }

    /// The first entry, used as the default redirect.
    pub fn first(&self) -> &RedirectUrl {
        // Non-empty by construction.
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &RedirectUrl> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> RedirectUrl {
        RedirectUrl::parse(raw).unwrap_or_else(|e| panic!("{raw:?} should be valid: {e}"))
    }

    fn err(raw: &str) -> String {
        match RedirectUrl::parse(raw) {
            Ok(u) => panic!("{raw:?} should be rejected, got {u:?}"),
            Err(e) => {
                assert_eq!(e.field, "redirect_url");
                e.message
            }
        }
    }

    /// Whether `candidate` parses and is allowed by `allowed`.
    fn allowed(allowed: &str, candidate: &str) -> bool {
        url(allowed).allows(&url(candidate))
    }

    fn token() -> MagicToken {
        MagicToken::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("valid token")
    }
    const T: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    const SCHEME_ERR: &str = "redirect_url: must be an absolute https URL (http is allowed only for localhost)";

    // ---- parse ----

    #[test]
    fn accepts_https() {
        assert_eq!(url("https://a.com/app").as_str(), "https://a.com/app");
        assert_eq!(url("https://a.com").as_str(), "https://a.com/");
        assert_eq!(url("https://a.com:8443/cb?x=1").as_str(), "https://a.com:8443/cb?x=1");
        assert_eq!(url("https://1.2.3.4/").as_str(), "https://1.2.3.4/");
    }

    #[test]
    fn trims_and_normalises() {
        assert_eq!(url("  https://A.COM:443/x/./y/../z \n").as_str(), "https://a.com/x/z");
        assert_eq!(url("HTTPS://a.com").as_str(), "https://a.com/");
        assert_eq!(url("https://bücher.de/").as_str(), "https://xn--bcher-kva.de/");
    }

    #[test]
    fn http_only_for_loopback() {
        assert_eq!(url("http://localhost/cb").as_str(), "http://localhost/cb");
        assert_eq!(url("http://LOCALHOST:8080/cb").as_str(), "http://localhost:8080/cb");
        assert_eq!(url("http://127.0.0.1:3000").as_str(), "http://127.0.0.1:3000/");
        assert_eq!(url("http://[::1]/").as_str(), "http://[::1]/");
        assert_eq!(url("http://[0:0::1]:9000/x").as_str(), "http://[::1]:9000/x");

        for raw in [
            "http://example.com/",
            "http://a.com/cb",
            "http://127.0.0.2/",
            "http://10.0.0.1/",
            "http://[::2]/",
            "http://localhost.evil.com/",
            "http://localhost./",
            "http://0.0.0.0/",
        ] {
            assert_eq!(err(raw), SCHEME_ERR, "{raw}");
        }
    }

    #[test]
    fn rejects_other_schemes_and_relative_urls() {
        for raw in [
            "ftp://a.com/",
            "javascript:alert(1)",
            "JavaScript:alert(document.domain)//https://a.com",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "ws://a.com/",
            "mailto:a@x.com",
            "/relative/path",
            "relative",
            "//a.com/app",
            "",
            "   ",
        ] {
            assert_eq!(err(raw), SCHEME_ERR, "{raw}");
        }
    }

    #[test]
    fn rejects_user_info() {
        const MSG: &str = "redirect_url: must not contain user info";
        for raw in [
            "https://user@a.com/",
            "https://user:pass@a.com/",
            "https://:pass@a.com/",
            "https://a.com@evil.com/",
            "https://a.com@evil.com",
            "https://@a.com",
            "https://@a.com/app",
            "https://:@a.com/",
            "https:@a.com",
            "https:\\\\@a.com",
            "http://user@localhost/",
            "http://@localhost/",
        ] {
            assert_eq!(err(raw), MSG, "{raw}");
        }
    }

    #[test]
    fn at_sign_outside_the_authority_is_fine() {
        assert_eq!(url("https://a.com/@user").as_str(), "https://a.com/@user");
        assert_eq!(
            url("https://a.com/cb?email=a@x.com").as_str(),
            "https://a.com/cb?email=a@x.com"
        );
    }

    #[test]
    fn rejects_fragment() {
        const MSG: &str = "redirect_url: must not contain a fragment";
        assert_eq!(err("https://a.com/app#x"), MSG);
        assert_eq!(err("https://a.com/app#"), MSG);
        assert_eq!(err("https://a.com#"), MSG);
        assert_eq!(err("https://a.com/?q=1#frag"), MSG);
    }

    #[test]
    fn rejects_control_characters() {
        for raw in [
            "https://a.com/a\r\nb",
            "https://a.c\tom/",
            "https://a.com/\0",
            "https://a.com/?x=\ny",
        ] {
            err(raw);
        }
    }

    #[test]
    fn rejects_malformed_urls() {
        for raw in [
            "https://",
            "https://:443/",
            "https://?x",
            "https://a b.com/",
            "https://a.com:99999/",
            "https://a.com%40evil.com/",
        ] {
            err(raw);
        }
    }

    #[test]
    fn length_limit() {
        let base = "https://a.com/";
        let ok = format!("{base}{}", "a".repeat(2048 - base.len()));
        assert_eq!(url(&ok).as_str().len(), 2048);
        let too_long = format!("{ok}a");
        assert_eq!(err(&too_long), "redirect_url: must be at most 2048 characters");
        // Within the limit as typed, but over it once percent-encoded.
        let grows = format!("{base}{}x", " ".repeat(1000));
        assert_eq!(err(&grows), "redirect_url: must be at most 2048 characters");
    }

    #[test]
    fn debug_and_display_show_the_url() {
        let u = url("https://A.com/app");
        assert_eq!(u.to_string(), "https://a.com/app");
        assert_eq!(format!("{u:?}"), "RedirectUrl(\"https://a.com/app\")");
    }

    // ---- allows ----

    #[test]
    fn exact_and_sub_path_match() {
        assert!(allowed("https://a.com/app", "https://a.com/app"));
        assert!(allowed("https://a.com/app", "https://a.com/app/"));
        assert!(allowed("https://a.com/app", "https://a.com/app/cb"));
        assert!(allowed("https://a.com/app", "https://a.com/app/cb/deeper"));
    }

    #[test]
    fn prefix_must_end_at_a_slash() {
        assert!(!allowed("https://a.com/app", "https://a.com/apple"));
        assert!(!allowed("https://a.com/app", "https://a.com/app-admin"));
        assert!(!allowed("https://a.com/app", "https://a.com/ap"));
        assert!(!allowed("https://a.com/app", "https://a.com/"));
        assert!(!allowed("https://a.com/app", "https://a.com/APP"));
    }

    #[test]
    fn trailing_slash_entry() {
        assert!(allowed("https://a.com/app/", "https://a.com/app/"));
        assert!(allowed("https://a.com/app/", "https://a.com/app/x"));
        assert!(!allowed("https://a.com/app/", "https://a.com/app"));
        assert!(!allowed("https://a.com/app/", "https://a.com/apple"));
    }

    #[test]
    fn root_entry_allows_whole_origin() {
        assert!(allowed("https://a.com", "https://a.com/"));
        assert!(allowed("https://a.com/", "https://a.com/anything/at/all?x=1"));
        assert!(allowed("https://a.com/", "https://a.com/a%2Fb"));
        assert!(!allowed("https://a.com/", "https://b.com/"));
    }

    #[test]
    fn host_must_match_exactly() {
        assert!(!allowed("https://a.com/app", "https://evil.a.com/app"));
        assert!(!allowed("https://a.com/app", "https://a.com.evil.com/app"));
        assert!(!allowed("https://a.com/app", "https://evila.com/app"));
        assert!(!allowed("https://a.com/app", "https://a.co/app"));
        assert!(!allowed("https://sub.a.com/app", "https://a.com/app"));
    }

    #[test]
    fn host_case_is_ignored() {
        assert!(allowed("https://a.com/app", "https://A.COM/app"));
        assert!(allowed("https://A.com/app", "https://a.com/app/cb"));
    }

    #[test]
    fn trailing_dot_host_is_a_different_host() {
        assert!(!allowed("https://a.com/app", "https://a.com./app"));
        assert!(!allowed("https://a.com./app", "https://a.com/app"));
    }

    #[test]
    fn ports() {
        assert!(allowed("https://a.com/app", "https://a.com:443/app"));
        assert!(allowed("https://a.com:443/app", "https://a.com/app"));
        assert!(!allowed("https://a.com/app", "https://a.com:8443/app"));
        assert!(!allowed("https://a.com:8443/app", "https://a.com/app"));
        assert!(allowed("http://localhost:3000/", "http://localhost:3000/cb"));
        assert!(!allowed("http://localhost:3000/", "http://localhost:3001/cb"));
        assert!(!allowed("http://localhost:3000/", "http://localhost/cb"));
        assert!(allowed("http://localhost/", "http://localhost:80/cb"));
    }

    #[test]
    fn scheme_must_match() {
        assert!(!allowed("https://localhost/", "http://localhost/"));
        assert!(!allowed("http://localhost/", "https://localhost/"));
        // Even with explicit ports that make the numbers line up.
        assert!(!allowed("https://localhost:8080/", "http://localhost:8080/"));
    }

    #[test]
    fn loopback_hosts_are_distinct() {
        assert!(!allowed("http://localhost/", "http://127.0.0.1/"));
        assert!(!allowed("http://127.0.0.1/", "http://[::1]/"));
        assert!(allowed("http://127.0.0.1:3000/app", "http://127.0.0.1:3000/app/cb"));
        assert!(allowed("http://[::1]/app", "http://[0::1]/app"));
    }

    #[test]
    fn query_is_allowed_and_entry_query_ignored() {
        assert!(allowed("https://a.com/app", "https://a.com/app?next=/admin"));
        assert!(allowed("https://a.com/app", "https://a.com/app/cb?x=1&y=2"));
        assert!(allowed("https://a.com/app?foo=bar", "https://a.com/app/cb"));
        assert!(allowed("https://a.com/app?foo=bar", "https://a.com/app?other=1"));
        assert!(!allowed("https://a.com/app", "https://a.com/apple?x=/app"));
    }

    #[test]
    fn dot_segments_are_resolved_before_matching() {
        assert!(!allowed("https://a.com/app", "https://a.com/app/../admin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app/./../admin"));
        assert!(allowed("https://a.com/app", "https://a.com/other/../app/cb"));
        assert!(allowed("https://a.com/app", "https://a.com/app/./cb"));
        assert!(!allowed("https://a.com/app/", "https://a.com/app/.."));
        // The entry itself is normalised too.
        assert!(allowed("https://a.com/x/../app", "https://a.com/app/cb"));
    }

    #[test]
    fn percent_encoded_dot_segments() {
        assert_eq!(url("https://a.com/app/%2e%2e/admin").as_str(), "https://a.com/admin");
        assert!(!allowed("https://a.com/app", "https://a.com/app/%2e%2e/admin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app/%2E%2E/admin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app/.%2e/admin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app/%2e./admin"));
        assert!(allowed("https://a.com/app", "https://a.com/x/%2e%2e/app/cb"));
        assert!(allowed("https://a.com/app", "https://a.com/app/%2e/cb"));
    }

    #[test]
    fn encoded_separators_below_a_prefix_are_refused() {
        assert!(!allowed("https://a.com/app/", "https://a.com/app/..%2fadmin"));
        assert!(!allowed("https://a.com/app/", "https://a.com/app/..%2Fadmin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app/..%5cadmin"));
        assert!(!allowed("https://a.com/app", "https://a.com/app%2f..%2fadmin"));
        // An encoded slash that is part of the entry itself is fine.
        assert!(allowed("https://a.com/a%2Fb", "https://a.com/a%2Fb/cb"));
    }

    #[test]
    fn backslash_tricks() {
        // Special schemes treat `\` like `/`, so the host here really is a.com
        // and `@evil.com` is the path.
        let u = url("https://a.com\\@evil.com");
        assert_eq!(u.0.host_str(), Some("a.com"));
        assert_eq!(u.as_str(), "https://a.com/@evil.com");
        assert!(!allowed("https://a.com/app", "https://a.com\\@evil.com"));
        assert!(!allowed("https://evil.com/", "https://a.com\\@evil.com"));
        assert!(allowed("https://a.com/", "https://a.com\\@evil.com"));

        // And here the host is evil.com.
        let u = url("https://evil.com\\@a.com/app");
        assert_eq!(u.0.host_str(), Some("evil.com"));
        assert!(!allowed("https://a.com/", "https://evil.com\\@a.com/app"));
        assert!(!allowed("https://a.com/app", "https://evil.com\\@a.com/app"));

        assert!(allowed("https://a.com/app", "https:\\\\a.com\\app\\cb"));
        assert!(!allowed("https://a.com/app", "https://a.com\\app\\..\\admin"));
    }

    #[test]
    fn allow_list_checks_every_entry() {
        let list = RedirectAllowList::parse_all(&["https://a.com/app", "http://localhost:3000/"]).expect("valid list");
        assert!(list.allows(&url("https://a.com/app/cb")));
        assert!(list.allows(&url("http://localhost:3000/anything")));
        assert!(!list.allows(&url("https://a.com/admin")));
        assert!(!list.allows(&url("https://b.com/app")));
        assert_eq!(list.first().as_str(), "https://a.com/app");
        assert_eq!(list.iter().count(), 2);
    }

    #[test]
    fn allow_list_must_not_be_empty() {
        let e = RedirectAllowList::new(vec![]).unwrap_err();
        assert_eq!(e.field, "redirect_url");
        assert!(e.message.starts_with("redirect_url: "));
        assert!(e.message.contains("at least one allowed redirect URL is required"));
        let empty: [&str; 0] = [];
        assert_eq!(RedirectAllowList::parse_all(&empty).unwrap_err(), e);
    }

    #[test]
    fn allow_list_reports_invalid_entries() {
        let e = RedirectAllowList::parse_all(&["https://a.com/", "http://b.com/"]).unwrap_err();
        assert_eq!(e.message, SCHEME_ERR);
        let owned = vec![String::from("https://a.com/#x")];
        assert!(RedirectAllowList::parse_all(&owned).is_err());
    }

    // ---- with_token ----

    #[test]
    fn with_token_without_query() {
        assert_eq!(
            url("https://a.com/cb").with_token(&token()),
            format!("https://a.com/cb?magic_token={T}")
        );
        assert_eq!(
            url("https://a.com").with_token(&token()),
            format!("https://a.com/?magic_token={T}")
        );
        assert_eq!(
            url("https://a.com/cb?").with_token(&token()),
            format!("https://a.com/cb?magic_token={T}")
        );
    }

    #[test]
    fn with_token_keeps_existing_params_in_order() {
        assert_eq!(
            url("https://a.com/cb?b=2&a=1&c").with_token(&token()),
            format!("https://a.com/cb?b=2&a=1&c&magic_token={T}")
        );
    }

    #[test]
    fn with_token_replaces_existing_token_params() {
        assert_eq!(
            url("https://a.com/cb?magic_token=old").with_token(&token()),
            format!("https://a.com/cb?magic_token={T}")
        );
        assert_eq!(
            url("https://a.com/cb?magic_token=old1&x=1&magic_token=old2&y=2&magic_token").with_token(&token()),
            format!("https://a.com/cb?x=1&y=2&magic_token={T}")
        );
        // Encoded spellings of the key are what the app would decode to.
        assert_eq!(
            url("https://a.com/cb?magic%5Ftoken=old&x=1").with_token(&token()),
            format!("https://a.com/cb?x=1&magic_token={T}")
        );
        // Similar names are not the token.
        assert_eq!(
            url("https://a.com/cb?magic_token2=a&xmagic_token=b").with_token(&token()),
            format!("https://a.com/cb?magic_token2=a&xmagic_token=b&magic_token={T}")
        );
    }

    #[test]
    fn with_token_is_idempotent_in_shape() {
        let once = url("https://a.com/cb?x=1").with_token(&token());
        let twice = url(&once).with_token(&token());
        assert_eq!(once, twice);
    }

    #[test]
    fn with_token_preserves_percent_encoding() {
        assert_eq!(
            url("https://a.com/p%20q?next=%2Fhome%3Fa%3D1&s=a+b&e=%E2%9C%93").with_token(&token()),
            format!("https://a.com/p%20q?next=%2Fhome%3Fa%3D1&s=a+b&e=%E2%9C%93&magic_token={T}")
        );
        // Unencoded `/` and `?` in the query stay as they were.
        assert_eq!(
            url("https://a.com/cb?next=/home?x").with_token(&token()),
            format!("https://a.com/cb?next=/home?x&magic_token={T}")
        );
    }

    #[test]
    fn with_token_drops_empty_pairs() {
        assert_eq!(
            url("https://a.com/cb?&x=1&&").with_token(&token()),
            format!("https://a.com/cb?x=1&magic_token={T}")
        );
    }

    #[test]
    fn with_token_result_is_still_allowed() {
        let entry = url("https://a.com/app");
        let link = url("https://a.com/app/cb?x=1").with_token(&MagicToken::generate());
        assert!(entry.allows(&url(&link)));
    }
}
