-- Roles replace the is_admin flag: 'admin' changes anything, 'user' only their own objects,
-- 'auditor' reads everything and changes nothing. is_admin stays as a column computed from the
-- role, so anything reading it sees the same answer and there is one source of truth.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user'
    CHECK (role IN ('admin', 'user', 'auditor'));
UPDATE users SET role = 'admin' WHERE is_admin != 0;
ALTER TABLE users DROP COLUMN is_admin;
ALTER TABLE users ADD COLUMN is_admin INTEGER GENERATED ALWAYS AS (role = 'admin') VIRTUAL;

-- API tokens: a name and an expiry, created and revoked by their user. Only the SHA-256 of the
-- token is stored (the token is 256 random bits, so a fast hash is enough); the token itself is
-- shown once, on creation.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (user_id, name) WHERE revoked_at IS NULL;
