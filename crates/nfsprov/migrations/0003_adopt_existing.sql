-- An admin asked to adopt a directory that already exists at the volume's path (instead of
-- refusing it, as for every other create).
ALTER TABLE volumes ADD COLUMN adopt_existing INTEGER NOT NULL DEFAULT 0;
