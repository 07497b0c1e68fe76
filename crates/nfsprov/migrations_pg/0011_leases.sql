-- Reconciler leases (issue 13), as migrations/0011_leases.sql: `token` only grows (a take
-- increments it, a renewal keeps it, a release only expires the row); `expires_at` is in
-- milliseconds since the Unix epoch by the database's clock.
CREATE TABLE server_leases (
    server_id BIGINT PRIMARY KEY REFERENCES servers(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
