-- Each root path's export policy: what ordinary users may ask for there (spec::policy), as
-- JSON. '{}' is the safe defaults: root squash, secure ports, no world-wide write access, no
-- crossmnt/nohide/insecure_locks, no anonuid=0/anongid=0.
ALTER TABLE root_paths ADD COLUMN export_policy TEXT NOT NULL DEFAULT '{}';
