//! Reading the magic token out of a callback URL.

/// The `magic_token` parameter of a callback URL, a query string (with or
/// without `?`), or `None` when there is none.
///
/// ```
/// use magicauth::token_from_url;
/// assert_eq!(token_from_url("https://a.com/cb?x=1&magic_token=abc").as_deref(), Some("abc"));
/// assert_eq!(token_from_url("?magic_token=abc").as_deref(), Some("abc"));
/// assert_eq!(token_from_url("magic_token=abc&next=%2F").as_deref(), Some("abc"));
/// assert_eq!(token_from_url("https://a.com/cb"), None);
/// ```
pub fn token_from_url(url_or_query: &str) -> Option<String> {
    let input = url_or_query.trim();
    let query = match url::Url::parse(input) {
        Ok(url) => url.query().unwrap_or_default().to_owned(),
        // Not an absolute URL: a path with a query, or the query itself.
        Err(_) => match input.split_once('?') {
            Some((_, query)) => query.to_owned(),
            None => input.to_owned(),
        },
    };
    let query = query.split('#').next().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "magic_token")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_wherever_it_is() {
        let t = "Ab3_-xYz";
        for input in [
            format!("https://app.example.com/auth/callback?magic_token={t}"),
            format!("https://app.example.com/auth/callback?next=%2Fhome&magic_token={t}&lang=en"),
            format!("http://localhost:3000/cb?magic_token={t}#section"),
            format!("/auth/callback?magic_token={t}"),
            format!("?magic_token={t}"),
            format!("magic_token={t}"),
            format!("  magic_token={t}  "),
        ] {
            assert_eq!(token_from_url(&input).as_deref(), Some(t), "{input}");
        }
    }

    #[test]
    fn none_without_a_token() {
        for input in [
            "",
            "https://a.com/cb",
            "https://a.com/cb?magic_token=",
            "token=abc",
            "https://a.com/cb#magic_token=x",
        ] {
            assert_eq!(token_from_url(input), None, "{input}");
        }
    }
}
