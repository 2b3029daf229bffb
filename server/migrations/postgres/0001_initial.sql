-- The schema of migrations/sqlite/0001_initial.sql in PostgreSQL's types.
-- Timestamps are milliseconds since the Unix epoch (UTC), as BIGINT, so the
-- same arithmetic works on every backend; hashes and keys are BYTEA.

CREATE TABLE apps (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        BYTEA NOT NULL UNIQUE,
    plan            TEXT NOT NULL CHECK (plan IN ('free', 'custom')),
    burst           BIGINT NOT NULL CHECK (burst > 0),
    monthly_limit   BIGINT CHECK (monthly_limit IS NULL OR monthly_limit >= 0),
    token_ttl_s     BIGINT NOT NULL CHECK (token_ttl_s > 0),
    session_ttl_s   BIGINT NOT NULL CHECK (session_ttl_s > 0),
    redirect_urls   TEXT NOT NULL, -- JSON array of strings, in priority order
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE users (
    id                  BIGSERIAL PRIMARY KEY,
    app_id              TEXT NOT NULL REFERENCES apps (id),
    email               TEXT NOT NULL,
    name                TEXT,
    email_verified_at   BIGINT NOT NULL,
    last_login_at       BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    UNIQUE (app_id, email)
);

CREATE TABLE magic_links (
    token_hash      BYTEA PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps (id),
    email           TEXT NOT NULL,
    redirect_url    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX magic_links_expires_at ON magic_links (expires_at);

-- Sliding-window rate limiting: one row per counted request. Writers of one
-- app serialise on a transaction-scoped advisory lock (see postgres.rs).
CREATE TABLE rate_hits (
    bucket  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX rate_hits_bucket_at ON rate_hits (bucket, at);
CREATE INDEX rate_hits_at ON rate_hits (at);

CREATE TABLE monthly_usage (
    app_id  TEXT NOT NULL,
    month   TEXT NOT NULL, -- 'YYYY-MM', UTC
    links   BIGINT NOT NULL,
    PRIMARY KEY (app_id, month)
);

CREATE TABLE idempotency_keys (
    app_id          TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    BYTEA NOT NULL,
    status          INTEGER,  -- NULL while the first request is in flight
    body            TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE signing_keys (
    slot        TEXT PRIMARY KEY, -- 'current'
    kid         TEXT NOT NULL UNIQUE,
    private_key BYTEA NOT NULL,   -- PKCS#8 Ed25519
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Transactional outbox: written in the same transaction as the magic link.
-- The message (which holds the link) is cleared once delivered or given up.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    app_id          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    last_error      TEXT,
    sent_at         BIGINT,
    failed_at       BIGINT
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE sent_at IS NULL AND failed_at IS NULL;
