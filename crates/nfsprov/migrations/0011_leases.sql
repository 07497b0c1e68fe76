-- Reconciler leases (issue 13): at most one node reconciles a server at a time. `holder` is
-- the node id (host name, pid, random); `token` the fencing token, which only grows: a node
-- that takes the lease (free or expired) increments it, a renewal keeps it, a release only
-- expires the row (never deletes it, so the token cannot start over below what the servers
-- hold in their fence files). `expires_at` is in milliseconds since the Unix epoch by the
-- database's clock, so nodes' clocks do not matter.
CREATE TABLE server_leases (
    server_id INTEGER PRIMARY KEY REFERENCES servers(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
