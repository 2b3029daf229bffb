//! Email addresses as user identities.

use std::fmt;

use super::ValidationError;

const FIELD: &str = "email";
const MAX_LEN: usize = 254; // RFC 5321 forward-path limit minus the angle brackets
const MAX_LOCAL_LEN: usize = 64; // RFC 5321 local-part limit, in octets
const INVALID: &str = "not a valid email address";

/// A syntactically valid email address, trimmed and lower-cased.
///
/// Lower-casing the whole address (local part included) is what makes
/// `A@X.com` and `a@x.com` the same user; virtually no real mail system
/// treats local parts case-sensitively.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates and normalises `raw`. Errors use the field name `email`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        // Check before lower-casing so oversized input is rejected cheaply…
        check_len(trimmed)?;
        let lowered = trimmed.to_lowercase();
        // …and again after, because Unicode lower-casing can lengthen a string.
        check_len(&lowered)?;
        validate(&lowered).map_err(|()| ValidationError::new(FIELD, INVALID))?;
        Ok(Self(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        // `parse` guarantees exactly one '@'.
        self.0.split_once('@').map_or("", |(_, domain)| domain)
    }
}

fn check_len(s: &str) -> Result<(), ValidationError> {
    if s.chars().count() > MAX_LEN {
        return Err(ValidationError::new(
            FIELD,
            format_args!("must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

fn validate(addr: &str) -> Result<(), ()> {
    // The address ends up in a mail header: no whitespace (CR/LF!), no control
    // characters and no invisible/bidi formatting characters that would make
    // two addresses look identical.
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
    {
        return Err(());
    }
    let (local, domain) = addr.split_once('@').ok_or(())?;
    if domain.contains('@') {
        return Err(());
    }
    validate_local(local)?;
    validate_domain(domain)?;
    // The mail side sends only to addresses lettre accepts (dot-atom local
    // parts: no leading, trailing or doubled dots, no `:`; labels of at most
    // 63 characters). An address it would refuse is refused here, with a
    // 400, rather than answered 200 and never delivered.
    addr.parse::<lettre::Address>().map(drop).map_err(drop)
}

fn validate_local(local: &str) -> Result<(), ()> {
    // Quoted local parts are not supported, so the characters that only make
    // sense inside quotes (or would break header parsing) are rejected.
    const FORBIDDEN: &[char] = &['<', '>', ',', ';', '"', '(', ')', '\\', '[', ']'];
    if local.is_empty() || local.len() > MAX_LOCAL_LEN || local.contains(FORBIDDEN) {
        return Err(());
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), ()> {
    if !domain.contains('.') {
        return Err(());
    }
    // `split` yields empty labels for `x..com`, `.x.com` and `x.com.`.
    for label in domain.split('.') {
        let label_ok = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii());
        if !label_ok {
            return Err(());
        }
    }
    // Let the IDNA implementation used by `url` reject malformed
    // internationalised labels (and IP-address lookalikes such as `1.2.3.4`).
    match url::Host::parse(domain) {
        Ok(url::Host::Domain(_)) => Ok(()),
        _ => Err(()),
    }
}

/// Zero-width and bidirectional formatting characters: not whitespace or
/// control characters to Rust, but invisible when displayed.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

impl fmt::Debug for EmailAddress {
    // Not a secret, so the address is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EmailAddress").field(&self.0).finish()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> EmailAddress {
        EmailAddress::parse(raw).unwrap_or_else(|e| panic!("{raw:?} should be valid: {e}"))
    }

    fn err(raw: &str) -> ValidationError {
        match EmailAddress::parse(raw) {
            Ok(e) => panic!("{raw:?} should be rejected, got {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for raw in [
            "a@x.com",
            "first.last@example.co.uk",
            "user+tag@sub.example.org",
            "o'brien@example.ie",
            "x_y-z@a-b.example",
            "1@2.example",
            "very.common@example.com",
        ] {
            assert_eq!(ok(raw).as_str(), raw);
        }
    }

    #[test]
    fn trims_surrounding_whitespace() {
        assert_eq!(ok("  a@x.com\t\n").as_str(), "a@x.com");
        assert_eq!(ok("\r\na@x.com\r\n").as_str(), "a@x.com");
    }

    #[test]
    fn folds_case() {
        let upper = ok("Alice@Example.COM");
        assert_eq!(upper.as_str(), "alice@example.com");
        assert_eq!(upper, ok("alice@example.com"));
        assert_eq!(ok("A@X.com"), ok("a@x.com"));
        // Unicode lower-casing too.
        assert_eq!(ok("ÉLODIE@BÜCHER.DE").as_str(), "élodie@bücher.de");
    }

    #[test]
    fn equal_addresses_hash_equally() {
        use std::collections::HashSet;
        let set: HashSet<_> = [ok("A@X.com"), ok("a@x.com"), ok(" a@X.COM ")].into();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn accepts_unicode_domain_and_local_part() {
        assert_eq!(ok("user@bücher.de").domain(), "bücher.de");
        assert_eq!(ok("用户@例子.广告").as_str(), "用户@例子.广告");
        assert_eq!(ok("user@xn--bcher-kva.de").domain(), "xn--bcher-kva.de");
    }

    #[test]
    fn domain_accessor() {
        assert_eq!(ok("a@Mail.Example.com").domain(), "mail.example.com");
    }

    #[test]
    fn rejects_crlf_and_control_characters() {
        for raw in [
            "a@x.com\r\nBcc: victim@y.com",
            "a\r\n@x.com",
            "a@x\n.com",
            "a\rb@x.com",
            "a\0@x.com",
            "a@x.com\u{7f}x",
            "a\u{1b}@x.com",
        ] {
            assert_eq!(err(raw).message, "email: not a valid email address");
        }
    }

    #[test]
    fn rejects_whitespace_inside() {
        for raw in [
            "a b@x.com",
            "a@x .com",
            "a@x.c om",
            "a\t@x.com",
            "a\u{a0}b@x.com",
            "a\u{2003}@x.com",
        ] {
            err(raw);
        }
    }

    #[test]
    fn rejects_invisible_characters() {
        for raw in [
            "a\u{200b}@x.com",
            "a@x\u{200d}.com",
            "\u{202e}a@x.com",
            "a@x.com\u{feff}",
        ] {
            err(raw);
        }
    }

    #[test]
    fn rejects_wrong_number_of_at_signs() {
        for raw in ["ax.com", "a@b@x.com", "@x.com", "a@", "@", "a@@x.com"] {
            err(raw);
        }
    }

    #[test]
    fn rejects_bad_domains() {
        for raw in [
            "a@localhost",
            "a@x",
            "a@x..com",
            "a@.x.com",
            "a@x.com.",
            "a@.",
            "a@-x.com",
            "a@x-.com",
            "a@x.-com",
            "a@x.com-",
            "a@x_y.com",
            "a@x.com:25",
            "a@[1.2.3.4]",
            "a@1.2.3.4",
            "a@x%2e.com",
            "a@x/y.com",
            "a@xn--a.com", // invalid punycode
        ] {
            err(raw);
        }
    }

    #[test]
    fn rejects_bad_local_parts() {
        for raw in [
            "<a>@x.com",
            "a,b@x.com",
            "a;b@x.com",
            "\"a\"@x.com",
            "a(b)@x.com",
            "a\\b@x.com",
            "[a]@x.com",
        ] {
            err(raw);
        }
    }

    #[test]
    fn rejects_what_the_mail_side_could_not_send() {
        for raw in [
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a:b@example.com",
        ] {
            err(raw);
        }
        err(&format!("a@{}.example.com", "d".repeat(64)));
        ok(&format!("a@{}.example.com", "d".repeat(63)));
    }

    #[test]
    fn every_accepted_address_is_one_the_mail_side_can_send() {
        for raw in [
            "a@x.com",
            "o'brien@example.ie",
            "user+tag@sub.example.org",
            "x_y-z@a-b.example",
            "élodie@bücher.de",
            "用户@例子.广告",
            "user@xn--bcher-kva.de",
            "a!#$%&*+/=?^_`{|}~-@x.com",
        ] {
            let address = ok(raw);
            address
                .as_str()
                .parse::<lettre::message::Mailbox>()
                .unwrap_or_else(|e| panic!("{raw:?} was accepted but cannot be sent: {e}"));
        }
    }

    #[test]
    fn local_part_length_limit() {
        let at_limit = format!("{}@x.com", "a".repeat(64));
        ok(&at_limit);
        err(&format!("{}@x.com", "a".repeat(65)));
    }

    #[test]
    fn total_length_limit() {
        // 64 + 1 + 189 = 254
        let domain = format!("{}.{}.{}.com", "d".repeat(63), "e".repeat(63), "f".repeat(57));
        let at_limit = format!("{}@{domain}", "a".repeat(64));
        assert_eq!(at_limit.len(), 254);
        ok(&at_limit);

        let too_long = format!("{}@{domain}x", "a".repeat(64));
        assert_eq!(too_long.len(), 255);
        let e = err(&too_long);
        assert_eq!(e.field, "email");
        assert_eq!(e.message, "email: must be at most 254 characters");

        // Surrounding whitespace does not count.
        ok(&format!("   {at_limit}   "));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 200 characters, 350 bytes: within the 254-character limit.
        let domain = [
            "ü".repeat(30),
            "ü".repeat(30),
            "ü".repeat(30),
            "ü".repeat(30),
            "ü".repeat(30),
        ]
        .join(".");
        let addr = format!("{}@{domain}.de", "a".repeat(42));
        assert_eq!(addr.chars().count(), 200);
        ok(&addr);
    }

    #[test]
    fn the_local_part_is_at_most_64_bytes() {
        // What SMTP can carry: 64 octets, so 32 two-byte characters.
        ok(&format!("{}@x.com", "é".repeat(32)));
        err(&format!("{}@x.com", "é".repeat(33)));
    }

    #[test]
    fn rejects_empty() {
        err("");
        err("   ");
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("nope");
        assert_eq!(e.field, "email");
        assert_eq!(e.to_string(), "email: not a valid email address");
    }

    #[test]
    fn debug_and_display_show_the_address() {
        let e = ok("A@X.com");
        assert_eq!(e.to_string(), "a@x.com");
        assert_eq!(format!("{e:?}"), "EmailAddress(\"a@x.com\")");
    }
}
