//! Apps found by key hash, kept for a moment so that a burst of requests
//! reads each app's row once instead of once per request.
//!
//! The contract lets an `apps …` command run beside a live server take up to
//! one second to reach it, so an entry is used for at most `APP_CACHE_TTL`.
//! Changes made through the same store (the same process) clear the cache at
//! once. Only apps that were found are kept: an unknown key is looked up every
//! time, so made-up keys cannot fill the cache.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::AppRecord;
use crate::domain::SecretHash;

/// How long an app read from the database is used without reading it again.
/// Well inside the one second the contract allows for changes made by another
/// process.
pub const APP_CACHE_TTL: Duration = Duration::from_millis(500);
/// Entries kept at most; a full cache drops its expired entries, and takes no
/// new one while none has expired.
const CAPACITY: usize = 4096;

pub(super) struct AppCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    /// Counts `clear` calls, so that a lookup that raced with a change does
    /// not store what it read before the change.
    generation: u64,
}

struct Entry {
    read_at: Instant,
    key_hash: SecretHash,
    app: AppRecord,
}

/// Taken before reading the database; `AppCache::put` stores the result only
/// if no change came in meanwhile.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket(u64);

impl AppCache {
    pub(super) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The app of `key_hash` if it was read less than `APP_CACHE_TTL` ago;
    /// otherwise a ticket for storing what the caller reads.
    pub(super) fn get(&self, key_hash: &SecretHash) -> Result<AppRecord, Ticket> {
        let inner = self.lock();
        match inner.entries.get(key_hash.as_bytes()) {
            // The map compared the hashes already; confirm in constant time
            // as the database lookups do.
            Some(entry) if entry.read_at.elapsed() < APP_CACHE_TTL && entry.key_hash.ct_eq(key_hash) => {
                Ok(entry.app.clone())
            }
            _ => Err(Ticket(inner.generation)),
        }
    }

    pub(super) fn put(&self, ticket: Ticket, key_hash: &SecretHash, app: &AppRecord, read_at: Instant) {
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= CAPACITY && !inner.entries.contains_key(key_hash.as_bytes()) {
            inner.entries.retain(|_, entry| entry.read_at.elapsed() < APP_CACHE_TTL);
            if inner.entries.len() >= CAPACITY {
                return;
            }
        }
        inner.entries.insert(
            *key_hash.as_bytes(),
            Entry {
                read_at,
                key_hash: *key_hash,
                app: app.clone(),
            },
        );
    }

    /// Forgets every app: called after each change to an app through this
    /// store.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AppRecord {
        crate::store::AppRecord::sample(id)
    }

    fn hash(byte: u8) -> SecretHash {
        SecretHash::from_bytes(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn an_entry_is_used_until_it_is_too_old() {
        let cache = AppCache::new();
        let ticket = cache.get(&hash(1)).expect_err("empty");
        cache.put(ticket, &hash(1), &record("app_a"), Instant::now());
        assert_eq!(cache.get(&hash(1)).expect("cached").id, "app_a");
        assert!(cache.get(&hash(2)).is_err(), "another key found an app");

        let ticket = cache.get(&hash(3)).expect_err("empty");
        let old = Instant::now()
            .checked_sub(APP_CACHE_TTL)
            .expect("an instant that long ago");
        cache.put(ticket, &hash(3), &record("app_old"), old);
        assert!(cache.get(&hash(3)).is_err(), "an expired entry was used");
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_kept() {
        let cache = AppCache::new();
        let ticket = cache.get(&hash(1)).expect_err("empty");
        // A change lands between the database read and `put`.
        cache.clear();
        cache.put(ticket, &hash(1), &record("app_stale"), Instant::now());
        assert!(cache.get(&hash(1)).is_err(), "a read from before the change was kept");
    }

    #[test]
    fn clear_forgets_every_app() {
        let cache = AppCache::new();
        for byte in 0..3 {
            let ticket = cache.get(&hash(byte)).expect_err("empty");
            cache.put(ticket, &hash(byte), &record("app"), Instant::now());
        }
        cache.clear();
        assert!((0..3).all(|byte| cache.get(&hash(byte)).is_err()));
    }

    #[test]
    fn a_full_cache_makes_room_only_from_expired_entries() {
        let cache = AppCache::new();
        let old = Instant::now()
            .checked_sub(APP_CACHE_TTL)
            .expect("an instant that long ago");
        for i in 0..CAPACITY {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = SecretHash::from_bytes(&bytes).expect("32 bytes");
            let ticket = cache.get(&key).expect_err("new");
            // Half the entries are already expired.
            let at = if i % 2 == 0 { old } else { Instant::now() };
            cache.put(ticket, &key, &record("app"), at);
        }
        let ticket = cache.get(&hash(0xff)).expect_err("new");
        cache.put(ticket, &hash(0xff), &record("app_new"), Instant::now());
        assert_eq!(cache.get(&hash(0xff)).expect("room was made").id, "app_new");
        assert_eq!(cache.lock().entries.len(), CAPACITY / 2 + 1);
    }
}
