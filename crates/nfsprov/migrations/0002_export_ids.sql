-- A stable per-server export id for each volume (nfs-ganesha's Export_Id, 1..65535). Assigned
-- once at create, never reused while the volume lives.
ALTER TABLE volumes ADD COLUMN export_id INTEGER;
UPDATE volumes SET export_id = id WHERE export_id IS NULL;
CREATE INDEX volumes_export_id ON volumes (server_id, export_id);
