-- The audit trail: every change and every denied attempt, append-only and hash-chained
-- (see src/audit.rs for the record's canonical encoding and ARCHITECTURE.md for the rules).
-- AUTOINCREMENT keeps the highest id ever used in sqlite_sequence, so removing the newest
-- records leaves a trace that `nfsprov audit verify` reports.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    -- who: the authenticated user (NULL when no one was authenticated), from where, which request
    actor       TEXT,
    actor_id    INTEGER,
    source      TEXT,
    request_id  TEXT,
    -- what: HTTP method and path (or CLI and its command), the action and its object
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT,
    volume_id   INTEGER,
    -- before -> after: JSON of the object's relevant fields
    before      TEXT,
    after       TEXT,
    -- result: the HTTP status (NULL from the CLI) and the outcome in words
    status      INTEGER,
    outcome     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

CREATE INDEX audit_by_volume ON audit (volume_id, id) WHERE volume_id IS NOT NULL;

-- A belt to the chain's braces: the service never changes or removes a record.
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
