-- Timestamps are milliseconds since the Unix epoch (UTC), so the same
-- arithmetic works on every backend.

CREATE TABLE apps (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    key_hash        BLOB NOT NULL UNIQUE,
    plan            TEXT NOT NULL CHECK (plan IN ('free', 'custom')),
    burst           INTEGER NOT NULL CHECK (burst > 0),
    monthly_limit   INTEGER CHECK (monthly_limit IS NULL OR monthly_limit >= 0),
    token_ttl_s     INTEGER NOT NULL CHECK (token_ttl_s > 0),
    session_ttl_s   INTEGER NOT NULL CHECK (session_ttl_s > 0),
    redirect_urls   TEXT NOT NULL, -- JSON array of strings, in priority order
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id              TEXT NOT NULL REFERENCES apps (id),
    email               TEXT NOT NULL,
    name                TEXT,
    email_verified_at   INTEGER NOT NULL,
    last_login_at       INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    UNIQUE (app_id, email)
);

CREATE TABLE magic_links (
    token_hash      BLOB PRIMARY KEY NOT NULL,
    app_id          TEXT NOT NULL REFERENCES apps (id),
    email           TEXT NOT NULL,
    redirect_url    TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);
CREATE INDEX magic_links_expires_at ON magic_links (expires_at);

-- Sliding-window rate limiting: one row per counted request.
CREATE TABLE rate_hits (
    bucket  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX rate_hits_bucket_at ON rate_hits (bucket, at);

CREATE TABLE monthly_usage (
    app_id  TEXT NOT NULL,
    month   TEXT NOT NULL, -- 'YYYY-MM', UTC
    links   INTEGER NOT NULL,
    PRIMARY KEY (app_id, month)
);

CREATE TABLE idempotency_keys (
    app_id          TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    BLOB NOT NULL,
    status          INTEGER,  -- NULL while the first request is in flight
    body            TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE signing_keys (
    slot        TEXT PRIMARY KEY NOT NULL, -- 'current'
    kid         TEXT NOT NULL UNIQUE,
    private_key BLOB NOT NULL,             -- PKCS#8 Ed25519
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Transactional outbox: written in the same transaction as the magic link.
-- The message (which holds the link) is cleared once delivered or given up.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    last_error      TEXT,
    sent_at         INTEGER,
    failed_at       INTEGER
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
