-- How a root path holds its volumes (issue 12): 'directory' (a plain directory per volume; its
-- size is reserved in the books, not enforced), 'btrfs' (a subvolume per volume with a qgroup
-- limit of its size), 'xfs-project' (XFS project quota; accepted by the model, not built yet).
-- Every root path recorded before this is a plain directory layout.
ALTER TABLE root_paths ADD COLUMN layout TEXT NOT NULL DEFAULT 'directory'
    CHECK (layout IN ('directory', 'btrfs', 'xfs-project'));
