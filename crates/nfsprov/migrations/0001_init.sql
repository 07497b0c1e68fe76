-- nfsprov desired state. Counters (users.used_gb, root_paths.allocated_gb) are changed only in the
-- same transaction that records or removes a volume, with a conditional UPDATE, so they never
-- overcommit even under concurrent requests (see datastore::create_volume).

CREATE TABLE servers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    ssh_host        TEXT NOT NULL,
    ssh_port        INTEGER NOT NULL CHECK (ssh_port BETWEEN 1 AND 65535),
    ssh_user        TEXT NOT NULL,
    ssh_key         TEXT NOT NULL,
    host_key        TEXT NOT NULL,
    nfs_address     TEXT NOT NULL,
    backend         TEXT NOT NULL DEFAULT 'knfsd',
    status          TEXT NOT NULL DEFAULT 'unknown',
    status_message  TEXT,
    last_reconciled_at TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE root_paths (
    id            INTEGER PRIMARY KEY,
    server_id     INTEGER NOT NULL REFERENCES servers(id),
    path          TEXT NOT NULL,
    capacity_gb   INTEGER NOT NULL CHECK (capacity_gb >= 1),
    allocated_gb  INTEGER NOT NULL DEFAULT 0 CHECK (allocated_gb >= 0),
    delete_policy TEXT NOT NULL DEFAULT 'retain' CHECK (delete_policy IN ('retain', 'purge')),
    created_at    TEXT NOT NULL,
    UNIQUE (server_id, path)
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    quota_gb      INTEGER NOT NULL DEFAULT 0 CHECK (quota_gb >= 0),
    used_gb       INTEGER NOT NULL DEFAULT 0 CHECK (used_gb >= 0),
    locked        INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);

CREATE TABLE volumes (
    id                INTEGER PRIMARY KEY,
    owner_id          INTEGER NOT NULL REFERENCES users(id),
    root_path_id      INTEGER NOT NULL REFERENCES root_paths(id),
    server_id         INTEGER NOT NULL REFERENCES servers(id),
    sub_path          TEXT NOT NULL,
    size_gb           INTEGER NOT NULL CHECK (size_gb >= 1),
    -- desired clients: JSON [{"host": "...", "options": "rw,sync"}]
    clients           TEXT NOT NULL,
    -- last clients verified on the server (NULL until first success); exported while a newer
    -- desired generation is rejected by the server
    applied_clients   TEXT,
    mode              TEXT NOT NULL,
    uid               INTEGER NOT NULL,
    gid               INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('creating', 'available', 'updating', 'deleting', 'deleted', 'error')),
    -- bumped on every change of desired state; the reconciler only records an outcome for the
    -- generation it applied
    generation        INTEGER NOT NULL DEFAULT 1,
    -- generation the server rejected (bad option etc.); not retried until the next change
    failed_generation INTEGER,
    last_error        TEXT,
    idempotency_key   TEXT,
    request_hash      TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    deleted_at        TEXT
);

CREATE UNIQUE INDEX volumes_idempotency ON volumes (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX volumes_live_path ON volumes (root_path_id, sub_path) WHERE state != 'deleted';
CREATE INDEX volumes_by_server ON volumes (server_id, state);
CREATE INDEX volumes_by_owner ON volumes (owner_id, state);
