-- Read-only btrfs snapshots of volumes (issue 12). Desired state, applied by the reconciler:
-- 'creating' (to be made), 'available' (made and verified read-only), 'deleting' (to be
-- removed), 'deleted' (gone; the row stays for the record), 'error' (the server refused; the
-- message says why; tried again on every pass). On the server a snapshot lives at
-- <root path>/.nfsprov-snapshots/<volume id>/<name>, outside every exported volume.
-- exclusive_bytes is the snapshot's qgroup exclusive size as last read (NULL: not read yet,
-- counted as 0); users.snapshot_gb is what the owner's snapshots are charged in used_gb
-- (their exclusive bytes added up, rounded up to whole GB).
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    volume_id INTEGER NOT NULL REFERENCES volumes(id),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('creating', 'available', 'deleting', 'deleted', 'error')),
    exclusive_bytes INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- One live snapshot of a name per volume (a deleted one frees its name).
CREATE UNIQUE INDEX snapshots_live_name ON snapshots(volume_id, name) WHERE state != 'deleted';
CREATE INDEX snapshots_volume ON snapshots(volume_id);
ALTER TABLE users ADD COLUMN snapshot_gb INTEGER NOT NULL DEFAULT 0;
-- A volume restored from a snapshot: its subvolume is made as a writable snapshot of that
-- snapshot instead of an empty one.
CREATE TABLE restores (
    volume_id INTEGER PRIMARY KEY REFERENCES volumes(id),
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id)
);
