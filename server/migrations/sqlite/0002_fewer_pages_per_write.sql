-- Every page a write changes is one more frame appended to the WAL. Two
-- changes take one page off each verification.

-- Users without AUTOINCREMENT: it kept the highest id in sqlite_sequence,
-- which every login rewrote. A plain INTEGER PRIMARY KEY takes the highest id
-- plus one, and users are never deleted, so ids are still never reused.
CREATE TABLE users_next (
    id                  INTEGER PRIMARY KEY,
    app_id              TEXT NOT NULL REFERENCES apps (id),
    email               TEXT NOT NULL,
    name                TEXT,
    email_verified_at   INTEGER NOT NULL,
    last_login_at       INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    UNIQUE (app_id, email)
);
INSERT INTO users_next (id, app_id, email, name, email_verified_at, last_login_at, created_at)
    SELECT id, app_id, email, name, email_verified_at, last_login_at, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_next RENAME TO users;

-- Idempotency records are purged in rowid order, the order they were
-- inserted in (see the store's purge): created_at needs no index of its own,
-- which every keyed request wrote to.
DROP INDEX idempotency_keys_created_at;
