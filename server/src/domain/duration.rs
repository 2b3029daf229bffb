//! Human-friendly durations for configuration (`15m`, `24h`, `1h30m`).

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Units in the only order they may appear (largest first).
const UNITS: [(char, u64); 4] = [('d', DAY), ('h', HOUR), ('m', MINUTE), ('s', 1)];

/// Parses `90s`, `15m`, `24h`, `7d`, combinations such as `1h30m` (largest
/// unit first, each unit at most once), or a bare integer of seconds.
/// Surrounding whitespace is ignored. Zero and overflowing values are errors.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let fail = |reason: &str| format!("invalid duration `{s}`: {reason}");
    let expected = || fail("expected e.g. 90s, 15m, 24h");
    let too_large = || fail("too large");

    let input = s.trim();
    if input.is_empty() {
        return Err(expected());
    }

    let mut total: u64 = 0;
    let mut rest = input;
    // Index into UNITS of the next unit allowed; enforces descending order.
    let mut next_unit = 0;
    while !rest.is_empty() {
        // Digits are parsed by hand: `u64::from_str` would accept a `+` sign.
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(expected());
        }
        let (digits, after) = rest.split_at(digits_len);
        let mut value: u64 = 0;
        for d in digits.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(too_large)?;
        }

        let mut chars = after.chars();
        let seconds = match chars.next() {
            // A bare number is seconds, but only on its own.
            None if rest.len() == input.len() => value,
            None => return Err(expected()),
            Some(unit) => {
                let offset = UNITS[next_unit..]
                    .iter()
                    .position(|&(u, _)| u == unit)
                    .ok_or_else(expected)?;
                let (_, scale) = UNITS[next_unit + offset];
                next_unit += offset + 1;
                value.checked_mul(scale).ok_or_else(too_large)?
            }
        };
        total = total.checked_add(seconds).ok_or_else(too_large)?;
        rest = chars.as_str();
    }

    if total == 0 {
        return Err(fail("must be greater than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// Compact form accepted by [`parse_duration`]: `15m`, `1h30m`, `24h`,
/// `1m30s`. Whole numbers of days from two days up are written in days
/// (`7d`); a single day stays `24h`, the more familiar spelling. Sub-second
/// precision is dropped; zero is `0s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    if secs.is_multiple_of(DAY) && secs >= 2 * DAY {
        return format!("{}d", secs / DAY);
    }
    let parts = [(secs / HOUR, 'h'), (secs % HOUR / MINUTE, 'm'), (secs % MINUTE, 's')];
    parts
        .iter()
        .filter(|&&(n, _)| n > 0)
        .map(|&(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s)
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
            .as_secs()
    }

    fn err(s: &str) -> String {
        match parse_duration(s) {
            Ok(d) => panic!("{s:?} should be rejected, got {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("24h"), 86_400);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs("1s"), 1);
    }

    #[test]
    fn parses_bare_seconds() {
        assert_eq!(secs("90"), 90);
        assert_eq!(secs("1"), 1);
        assert_eq!(secs("007"), 7);
    }

    #[test]
    fn parses_combinations() {
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1m30s"), 90);
        assert_eq!(secs("1d12h"), 129_600);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        assert_eq!(secs("2h15s"), 7215);
        assert_eq!(secs("0h30m"), 1800);
    }

    #[test]
    fn ignores_surrounding_whitespace() {
        assert_eq!(secs(" 15m \n"), 900);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "", "   ", "abc", "m", "15x", "15 m", "1h 30m", "15M", "1H", "1.5h", "-5s", "+5s", "+5", "-5", "5ms", "1w",
            "1y", "h1", "1h30", "30m1h", "1h1h", "1s1m", "1hm", "15m!", "٣s", "1h\n30m",
        ] {
            let e = err(s);
            assert!(e.starts_with(&format!("invalid duration `{s}`: ")), "{e}");
        }
    }

    #[test]
    fn error_text_shows_input_and_examples() {
        assert_eq!(err("abc"), "invalid duration `abc`: expected e.g. 90s, 15m, 24h");
    }

    #[test]
    fn rejects_zero() {
        for s in ["0", "0s", "0m", "0h0m0s", "000"] {
            assert_eq!(err(s), format!("invalid duration `{s}`: must be greater than zero"));
        }
    }

    #[test]
    fn rejects_overflow() {
        let max = u64::MAX;
        assert_eq!(secs(&max.to_string()), max);
        for s in [
            "18446744073709551616".to_owned(), // u64::MAX + 1
            "99999999999999999999999999s".to_owned(),
            format!("{max}d"),
            format!("{}h", max / 3600 + 1),
            format!("{}h{}s", max / 3600, max), // sum overflows
        ] {
            assert_eq!(err(&s), format!("invalid duration `{s}`: too large"));
        }
    }

    #[test]
    fn formats_compactly() {
        let f = |s| format_duration(Duration::from_secs(s));
        assert_eq!(f(900), "15m");
        assert_eq!(f(5400), "1h30m");
        assert_eq!(f(86_400), "24h");
        assert_eq!(f(90), "1m30s");
        assert_eq!(f(1), "1s");
        assert_eq!(f(3600), "1h");
        assert_eq!(f(3601), "1h1s");
        assert_eq!(f(129_600), "36h");
        assert_eq!(f(172_800), "2d");
        assert_eq!(f(604_800), "7d");
        assert_eq!(f(604_801), "168h1s");
        assert_eq!(f(0), "0s");
    }

    #[test]
    fn format_drops_sub_second_precision() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
        assert_eq!(format_duration(Duration::from_millis(999)), "0s");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for s in [
            1,
            59,
            60,
            61,
            90,
            900,
            3599,
            3600,
            5400,
            86_399,
            86_400,
            86_401,
            172_800,
            604_800,
            1_000_000,
            u64::MAX,
        ] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
        }
    }

    #[test]
    fn parse_then_format_normalises() {
        for (input, formatted) in [
            ("90s", "1m30s"),
            ("60m", "1h"),
            ("1d", "24h"),
            ("14d", "14d"),
            ("3600", "1h"),
        ] {
            assert_eq!(format_duration(parse_duration(input).unwrap()), formatted);
        }
    }
}
