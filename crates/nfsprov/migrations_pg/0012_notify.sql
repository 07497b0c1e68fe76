-- Wake-ups across nodes (issue 13): every committed change to what a server should look like,
-- or to what its reconciler recorded, sends `NOTIFY nfsprov_changes` with the payload
-- `want <server_id>` (desired state changed: the holder of the server's lease runs a pass)
-- or `done <server_id>` (an outcome was recorded: waiting requests read again). Triggers,
-- not statements in the datastore's writes, so no write path (now or later) can forget one;
-- PostgreSQL sends a transaction's notifications at commit, once per distinct payload, so a
-- batch of rows of one server costs one message. `datastore::notify` listens.

CREATE FUNCTION nfsprov_notify(server BIGINT, want BOOLEAN) RETURNS VOID AS $$
BEGIN
    IF server IS NOT NULL THEN
        PERFORM pg_notify('nfsprov_changes',
                          CASE WHEN want THEN 'want ' ELSE 'done ' END || server::TEXT);
    END IF;
END;
$$ LANGUAGE plpgsql;

-- A new volume, a new generation (PATCH, DELETE) or size is desired state; anything else a
-- row of `volumes` goes through (state, applied clients, errors, usage) is an outcome.
CREATE FUNCTION nfsprov_volumes_changed() RETURNS TRIGGER AS $$
BEGIN
    PERFORM nfsprov_notify(NEW.server_id,
        TG_OP = 'INSERT' OR NEW.generation IS DISTINCT FROM OLD.generation
        OR NEW.size_gb IS DISTINCT FROM OLD.size_gb);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER volumes_notify AFTER INSERT OR UPDATE ON volumes
    FOR EACH ROW EXECUTE FUNCTION nfsprov_volumes_changed();

-- A snapshot asked for or asked to go is desired state; its other changes are outcomes.
CREATE FUNCTION nfsprov_snapshots_changed() RETURNS TRIGGER AS $$
BEGIN
    PERFORM nfsprov_notify((SELECT server_id FROM volumes WHERE id = NEW.volume_id),
        TG_OP = 'INSERT' OR (NEW.state = 'deleting' AND OLD.state IS DISTINCT FROM 'deleting'));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER snapshots_notify AFTER INSERT OR UPDATE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION nfsprov_snapshots_changed();

CREATE FUNCTION nfsprov_restores_changed() RETURNS TRIGGER AS $$
BEGIN
    PERFORM nfsprov_notify((SELECT server_id FROM volumes WHERE id = NEW.volume_id), TRUE);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER restores_notify AFTER INSERT ON restores
    FOR EACH ROW EXECUTE FUNCTION nfsprov_restores_changed();

-- A root path added or its export policy or capacity changed (not `allocated_gb`, which moves
-- with every create in the same transaction as the volume's own notification).
CREATE FUNCTION nfsprov_root_paths_changed() RETURNS TRIGGER AS $$
BEGIN
    PERFORM nfsprov_notify(NEW.server_id, TRUE);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER root_paths_notify AFTER INSERT OR UPDATE OF export_policy, capacity_gb ON root_paths
    FOR EACH ROW EXECUTE FUNCTION nfsprov_root_paths_changed();

-- A server registered (every node starts a reconciler for it) or its host key re-pinned; not
-- the status its reconciler records after each pass.
CREATE FUNCTION nfsprov_servers_changed() RETURNS TRIGGER AS $$
BEGIN
    PERFORM nfsprov_notify(NEW.id, TRUE);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER servers_notify AFTER INSERT OR UPDATE OF host_key ON servers
    FOR EACH ROW EXECUTE FUNCTION nfsprov_servers_changed();
