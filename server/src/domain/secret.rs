//! Secrets (magic-link tokens, app keys), their SHA-256 hashes, and random
//! identifiers. Secrets are only ever stored hashed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const TOKEN_BYTES: usize = 32;
/// Unpadded base64 length of 32 bytes.
const TOKEN_LEN: usize = 43;

const APP_KEY_PREFIX: &str = "mk_";
const APP_KEY_BODY_LEN: usize = 32;
/// `62^6 > u32::MAX`, so six base62 digits hold any CRC32.
const APP_KEY_CHECKSUM_LEN: usize = 6;
const APP_ID_PREFIX: &str = "app_";
const APP_ID_LEN: usize = 20;

/// Fills `buf` from the OS CSPRNG. There is no sensible way to carry on
/// without one, so failure is fatal.
fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

fn sha256(s: &str) -> SecretHash {
    SecretHash(Sha256::digest(s.as_bytes()).into())
}

/// A single-use sign-in token: 32 random bytes, base64url without padding.
pub struct MagicToken(String);

impl MagicToken {
    pub fn generate() -> Self {
        Self(random_urlsafe(TOKEN_BYTES))
    }

    /// Accepts exactly 43 base64url characters that decode to 32 bytes
    /// (the last character must be canonical, so each token has one spelling).
    pub fn parse(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == TOKEN_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD
                .decode(raw)
                .is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
        well_formed.then(|| Self(raw.to_owned()))
    }

    /// SHA-256 of the token string: what gets stored and looked up.
    pub fn hash(&self) -> SecretHash {
        sha256(&self.0)
    }

    /// The token itself, for putting into the emailed link.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MagicToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MagicToken(**redacted**)")
    }
}

/// An app's API key: `mk_` + 32 random base62 characters + a 6-character
/// base62 CRC32 of those 32, so secret scanners can recognise real keys
/// offline and typos are caught before a database lookup.
pub struct AppKey(String);

impl AppKey {
    pub fn generate() -> Self {
        let body = random_base62(APP_KEY_BODY_LEN);
        let checksum = app_key_checksum(&body);
        Self(format!("{APP_KEY_PREFIX}{body}{checksum}"))
    }

    /// Accepts only a correctly formatted key whose checksum matches.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(APP_KEY_PREFIX)?;
        if rest.len() != APP_KEY_BODY_LEN + APP_KEY_CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        // All ASCII, so this splits on a character boundary.
        let (body, checksum) = rest.split_at(APP_KEY_BODY_LEN);
        (app_key_checksum(body) == checksum).then(|| Self(raw.to_owned()))
    }

    /// SHA-256 of the whole key string: what gets stored and looked up.
    pub fn hash(&self) -> SecretHash {
        sha256(&self.0)
    }

    /// The key itself, shown to the app owner exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(**redacted**)")
    }
}

/// CRC32 of `body`, as six base62 digits, most significant first, left-padded
/// with `0`.
fn app_key_checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; APP_KEY_CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// SHA-256 of a secret. Equality via `==` is fine for lookups by hash; use
/// [`SecretHash::ct_eq`] when comparing against a value an attacker chose.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// `Some` only for exactly 32 bytes (e.g. a BLOB read from the database).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    // A prefix is enough to correlate log lines without printing the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

/// A new public app identifier: `app_` + 20 random base62 characters.
pub fn new_app_id() -> String {
    format!("{APP_ID_PREFIX}{}", random_base62(APP_ID_LEN))
}

/// `n` uniformly random base62 characters from the OS CSPRNG.
pub fn random_base62(n: usize) -> String {
    // Rejection sampling: 248 = 4 * 62 is the largest multiple of 62 that
    // fits in a byte; bytes >= 248 are discarded so `b % 62` is unbiased.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        fill_random(&mut buf);
        for &b in buf.iter().filter(|&&b| b < LIMIT).take(n - out.len()) {
            out.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    out
}

/// `bytes` random bytes from the OS CSPRNG, base64url without padding.
pub fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_base62(s: &str) -> bool {
        s.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    fn is_urlsafe(s: &str) -> bool {
        s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    // ---- MagicToken ----

    #[test]
    fn token_generate_format() {
        for _ in 0..100 {
            let t = MagicToken::generate();
            assert_eq!(t.expose().len(), 43);
            assert!(is_urlsafe(t.expose()), "{}", t.expose());
            assert_eq!(URL_SAFE_NO_PAD.decode(t.expose()).unwrap().len(), 32);
        }
    }

    #[test]
    fn token_generate_is_unique() {
        let set: HashSet<String> = (0..1000).map(|_| MagicToken::generate().expose().to_owned()).collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn token_parse_round_trip() {
        let t = MagicToken::generate();
        let parsed = MagicToken::parse(t.expose()).expect("generated token parses");
        assert_eq!(parsed.expose(), t.expose());
        assert_eq!(parsed.hash(), t.hash());
    }

    #[test]
    fn token_parse_rejects_wrong_length() {
        let good = MagicToken::generate().expose().to_owned();
        assert!(MagicToken::parse(&good[..42]).is_none());
        assert!(MagicToken::parse(&format!("{good}A")).is_none());
        assert!(MagicToken::parse("").is_none());
        assert!(MagicToken::parse(&"A".repeat(1000)).is_none());
    }

    #[test]
    fn token_parse_rejects_other_characters() {
        let base = "A".repeat(42);
        assert!(MagicToken::parse(&format!("{base}A")).is_some());
        for bad in ['+', '/', '=', ' ', '.', '\n', 'é'] {
            // Bad character at the end and at the start.
            assert!(MagicToken::parse(&format!("{base}{bad}")).is_none(), "{bad:?}");
            assert!(MagicToken::parse(&format!("{bad}{base}")).is_none(), "{bad:?}");
        }
        // Standard base64 spelling of a token is not accepted.
        assert!(MagicToken::parse("++++++++++++++++++++++++++++++++++++++++++A").is_none());
        assert!(MagicToken::parse("//////////////////////////////////////////A").is_none());
        // 44 chars with padding.
        assert!(MagicToken::parse(&format!("{base}A=")).is_none());
    }

    #[test]
    fn token_parse_requires_canonical_last_character() {
        // 43 chars carry 258 bits; the last 2 must be zero for 32 bytes.
        let base = "A".repeat(42);
        assert!(MagicToken::parse(&format!("{base}E")).is_some());
        assert!(MagicToken::parse(&format!("{base}B")).is_none());
        assert!(MagicToken::parse(&format!("{base}_")).is_none());
    }

    #[test]
    fn token_hash_is_sha256_of_the_string() {
        let t = MagicToken::parse(&"A".repeat(43)).unwrap();
        let expected: [u8; 32] = Sha256::digest("A".repeat(43).as_bytes()).into();
        assert_eq!(t.hash().as_bytes(), &expected);
        assert_ne!(t.hash(), MagicToken::generate().hash());
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = MagicToken::generate();
        let debug = format!("{t:?}");
        assert_eq!(debug, "MagicToken(**redacted**)");
        assert!(!debug.contains(t.expose()));
        assert_eq!(format!("{:?}", Some(&t)), "Some(MagicToken(**redacted**))");
    }

    // ---- AppKey ----

    #[test]
    fn app_key_generate_format() {
        for _ in 0..100 {
            let k = AppKey::generate();
            let s = k.expose();
            assert_eq!(s.len(), 3 + 32 + 6);
            assert!(s.starts_with("mk_"));
            assert!(is_base62(&s[3..]), "{s}");
            assert_eq!(app_key_checksum(&s[3..35]), &s[35..]);
        }
    }

    #[test]
    fn app_key_round_trip() {
        let k = AppKey::generate();
        let parsed = AppKey::parse(k.expose()).expect("generated key parses");
        assert_eq!(parsed.expose(), k.expose());
        assert_eq!(parsed.hash(), k.hash());
    }

    #[test]
    fn app_key_generate_is_unique() {
        let set: HashSet<String> = (0..1000).map(|_| AppKey::generate().expose().to_owned()).collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn app_key_checksum_known_values() {
        // Computed independently (Python: zlib.crc32, base62 0-9A-Za-z).
        assert_eq!(app_key_checksum(&"0".repeat(32)), "2wjyrI");
        assert_eq!(app_key_checksum("abcdefghijklmnopqrstuvwxyz012345"), "1nc0VA");
        assert!(AppKey::parse("mk_000000000000000000000000000000002wjyrI").is_some());
        assert!(AppKey::parse("mk_abcdefghijklmnopqrstuvwxyz0123451nc0VA").is_some());
        // Small CRCs are left-padded with '0'.
        assert_eq!(app_key_checksum(""), "000000");
    }

    #[test]
    fn app_key_rejects_checksum_mismatch() {
        let k = AppKey::generate();
        let s = k.expose();
        // Change one body character.
        let mut chars: Vec<char> = s.chars().collect();
        chars[10] = if chars[10] == 'x' { 'y' } else { 'x' };
        let tampered: String = chars.iter().collect();
        assert!(AppKey::parse(&tampered).is_none());
        // Change one checksum character.
        let mut chars: Vec<char> = s.chars().collect();
        chars[40] = if chars[40] == '0' { '1' } else { '0' };
        let tampered: String = chars.iter().collect();
        assert!(AppKey::parse(&tampered).is_none());
        // Swap two checksum characters' order is a different checksum too.
        assert!(AppKey::parse("mk_00000000000000000000000000000000w2jyrI").is_none());
    }

    #[test]
    fn app_key_rejects_bad_format() {
        let k = AppKey::generate();
        let s = k.expose();
        let rest = &s[3..];
        for bad in [
            format!("MK_{rest}"),
            format!("mk-{rest}"),
            format!("ak_{rest}"),
            format!("mk{rest}"),
            rest.to_owned(),
            format!("mk_{rest}0"),
            s[..s.len() - 1].to_owned(),
            format!(" {s}"),
            format!("{s}\n"),
            String::new(),
            "mk_".to_owned(),
            "mk_0000000000000000000000000000000-2wjyrI".to_owned(),
            "mk_0000000000000000000000000000000é2wjyrI".to_owned(),
        ] {
            assert!(AppKey::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn app_key_debug_is_redacted() {
        let k = AppKey::generate();
        let debug = format!("{k:?}");
        assert_eq!(debug, "AppKey(**redacted**)");
        assert!(!debug.contains(k.expose()));
    }

    // ---- SecretHash ----

    #[test]
    fn secret_hash_from_bytes() {
        let bytes = [7u8; 32];
        let h = SecretHash::from_bytes(&bytes).expect("32 bytes");
        assert_eq!(h.as_bytes(), &bytes);
        assert!(SecretHash::from_bytes(&[0u8; 31]).is_none());
        assert!(SecretHash::from_bytes(&[0u8; 33]).is_none());
        assert!(SecretHash::from_bytes(&[]).is_none());
    }

    #[test]
    fn secret_hash_round_trips_through_bytes() {
        let h = MagicToken::generate().hash();
        assert_eq!(SecretHash::from_bytes(h.as_bytes()), Some(h));
    }

    #[test]
    fn secret_hash_ct_eq() {
        let a = SecretHash::from_bytes(&[1u8; 32]).unwrap();
        let mut other = [1u8; 32];
        assert!(a.ct_eq(&SecretHash::from_bytes(&other).unwrap()));
        other[31] = 2;
        assert!(!a.ct_eq(&SecretHash::from_bytes(&other).unwrap()));
        other[31] = 1;
        other[0] = 0;
        assert!(!a.ct_eq(&SecretHash::from_bytes(&other).unwrap()));
    }

    #[test]
    fn secret_hash_debug_shows_only_a_prefix() {
        let mut bytes = [0xffu8; 32];
        bytes[..4].copy_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        let h = SecretHash::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{h:?}"), "SecretHash(1a2b3c4d…)");
    }

    // ---- random identifiers ----

    #[test]
    fn app_id_format() {
        let ids: HashSet<String> = (0..1000).map(|_| new_app_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 24);
            assert!(id.starts_with("app_"));
            assert!(is_base62(&id[4..]), "{id}");
        }
    }

    #[test]
    fn random_base62_lengths() {
        for n in [0, 1, 20, 63, 64, 65, 500] {
            let s = random_base62(n);
            assert_eq!(s.len(), n);
            assert!(is_base62(&s));
        }
    }

    #[test]
    fn random_base62_covers_the_alphabet_roughly_uniformly() {
        // 62_000 samples: each symbol expects 1000. With bias towards the
        // first 8 symbols (what a plain `% 62` would give) they would get ~25%
        // more. Bounds are loose enough that this never flakes in practice.
        let s = random_base62(62_000);
        let mut counts = [0u32; 62];
        for b in s.bytes() {
            let i = BASE62.iter().position(|&c| c == b).unwrap();
            counts[i] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            assert!((800..1200).contains(&c), "symbol {} seen {c} times", BASE62[i] as char);
        }
        let first8: u32 = counts[..8].iter().sum();
        assert!(first8 < 8 * 1100, "first 8 symbols over-represented: {first8}");
    }

    #[test]
    fn random_urlsafe_lengths() {
        for (bytes, len) in [(0, 0), (1, 2), (16, 22), (32, 43), (33, 44)] {
            let s = random_urlsafe(bytes);
            assert_eq!(s.len(), len);
            assert!(is_urlsafe(&s));
            assert_eq!(URL_SAFE_NO_PAD.decode(&s).unwrap().len(), bytes);
        }
        assert_ne!(random_urlsafe(16), random_urlsafe(16));
    }
}
