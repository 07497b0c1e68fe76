-- Usage and resize (issue 12). Samples of what each volume and each root path holds, taken by
-- the reconciler every NFSPROV_USAGE_INTERVAL_SECS (never in a request), so the API can show
-- usage and its growth without asking the server. Bounded: the datastore keeps the newest
-- samples of each volume and root path (`datastore::usage::KEEP_SAMPLES`) and drops the rest
-- as it records a new one.
CREATE TABLE volume_usage (
    volume_id        INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    sampled_at       TEXT NOT NULL,
    -- btrfs: the qgroup's referenced bytes; directory: `du -s -B1`.
    used_bytes       INTEGER NOT NULL CHECK (used_bytes >= 0),
    -- btrfs only: the qgroup's exclusive bytes.
    exclusive_bytes  INTEGER CHECK (exclusive_bytes >= 0),
    PRIMARY KEY (volume_id, sampled_at)
) WITHOUT ROWID;

CREATE TABLE root_path_usage (
    root_path_id  INTEGER NOT NULL REFERENCES root_paths(id) ON DELETE CASCADE,
    sampled_at    TEXT NOT NULL,
    -- `df -P -B1` of the root path: the file system's size, used and available bytes.
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    used_bytes    INTEGER NOT NULL CHECK (used_bytes >= 0),
    free_bytes    INTEGER NOT NULL CHECK (free_bytes >= 0),
    PRIMARY KEY (root_path_id, sampled_at)
) WITHOUT ROWID;

-- Resize: the size whose limit the server holds (btrfs: the qgroup limit read back after the
-- last resize). NULL: the size the volume was created with, untouched since. The reconciler
-- applies a new size while size_gb differs from it; size_error says why the server refused
-- the last attempt (a shrink below what the volume holds), NULL when it did not.
ALTER TABLE volumes ADD COLUMN applied_size_gb INTEGER;
ALTER TABLE volumes ADD COLUMN size_error TEXT;
