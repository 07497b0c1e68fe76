//! Sizes that hold through NFS (issue 12): a btrfs root path on a ganesha test bed server (a
//! loop device with quotas in the server's mount namespace), volumes created through the API
//! and written from a client host with libnfs `nfs-cp`. A file bigger than the volume's size
//! stops at its limit and the writer is refused with the quota error; a file within it goes
//! through and reads back; a second volume on the same root path still takes writes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::btrfs::*;
use common::nfs::Nfs;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

const GB: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;

/// A local file of `bytes` bytes of pseudo-random data (no run of zeros a file system could
/// store as a hole): one 8 MiB chunk from a xorshift generator seeded by `seed`, repeated.
fn data_file(dir: &Path, name: &str, bytes: u64, seed: u64) -> PathBuf {
    let mut x = seed | 1;
    let chunk: Vec<u8> = (0..8 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

/// The size in bytes of `file` inside the server.
fn size_inside(srv: &TestbedServer, file: &str) -> u64 {
    inside(srv, &format!("stat -c %s {file}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_volume_over_nfs_refuses_the_writer_past_its_size_and_spills_nowhere() {
    if skip_without_btrfs() {
        return;
    }
    let env = Env::start_ganesha(1, 1, 100, 100).await;
    let srv = env.server("srv1");
    // 3 GB: room for a full 1 GB volume and more, so only the quota can stop a writer.
    let fs = srv.mount_btrfs("btrfs", 3 << 30, true).unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let rp_id = rp["id"].as_i64().unwrap();
    // no_root_squash: libnfs writes as root.
    env.cli_ok(&["rootpath", "policy", &rp_id.to_string(), PERMISSIVE_POLICY]);
    let client = env.tb.client("client1").unwrap().addr.clone();
    let clients = json!([{"host": client, "options": "rw,no_root_squash"}]);

    // The smallest size the API takes is 1 GB (10^9 bytes): that is what is filled.
    let mut ids = Vec::new();
    for sub in ["full", "other"] {
        let (s, v) = env.create(ALICE, rp_id, sub, 1, clients.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(
            v["state"], "available",
            "ganesha exports the subvolume: {v}"
        );
        assert_eq!(v["layout"], "btrfs", "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    let full = format!("{BTRFS_ROOT}/full");
    let other = format!("{BTRFS_ROOT}/other");
    let nfs = Nfs::new(&env);
    let local = env.dir.path();

    // Within the size: written over NFS, on the server, read back over NFS.
    let small = data_file(local, "small", 64 * MIB, 1);
    let (ok, said) = nfs.copy("client1", &small, &format!("{full}/small"), 3);
    assert!(ok, "{said}");
    assert_eq!(size_inside(srv, &format!("{full}/small")), 64 * MIB);
    let back = nfs
        .client("client1")
        .run(&["nfs-cat", &nfs.url(&format!("{full}/small"), 3, "")])
        .unwrap();
    assert!(back.status.success(), "{back:?}");
    assert!(
        back.stdout == std::fs::read(&small).unwrap(),
        "read back other data"
    );

    // Past the size: nfs-cp fails part way (it prints only that a write failed, not why) and
    // the file on the server stops under the limit; the writer's next file is refused with the
    // quota error, over v3 and v4.
    let big = data_file(local, "big", 1_100_000_000, 2);
    let started = std::time::Instant::now();
    let (ok, said) = nfs.copy("client1", &big, &format!("{full}/big"), 3);
    eprintln!("nfs-cp of 1.1 GB: {:?}: {said}", started.elapsed());
    assert!(!ok, "a 1.1 GB file went into a 1 GB volume: {said}");
    assert!(said.contains("Failed to write to dest file"), "{said}");
    let written = size_inside(srv, &format!("{full}/big"));
    assert!(
        written + 64 * MIB <= GB,
        "{written} bytes of the big file and 64 MiB are over the 10^9 byte limit"
    );
    // Stopped by the limit, not short of it by accident.
    assert!(
        written + 64 * MIB > GB - 64 * MIB,
        "stopped at {written} bytes"
    );
    let err = nfs
        .write("client1", &format!("{full}/after-v3"), 3, "x", "")
        .unwrap_err();
    assert!(err.contains("NFS3ERR_DQUOT"), "{err}");
    let err = nfs
        .write("client1", &format!("{full}/after-v4"), 4, "x", "")
        .unwrap_err();
    assert!(err.contains("NFS4ERR_DQUOT"), "{err}");

    // No spill: the other volume on the same root path takes a file and reads it back. (Files
    // go over v3: libnfs 4.0's nfs-cp fails any v4 write of 64 KiB or more on the client, with
    // "ZDR error: Failed to encode COMPOUND4args", on plain directories too.)
    let (ok, said) = nfs.copy("client1", &small, &format!("{other}/small"), 3);
    assert!(ok, "{said}");
    let back = nfs
        .client("client1")
        .run(&["nfs-cat", &nfs.url(&format!("{other}/small"), 4, "")])
        .unwrap();
    assert!(
        back.stdout == std::fs::read(&small).unwrap(),
        "{:?}",
        back.status
    );
    nfs.write("client1", &format!("{other}/note"), 3, "still room", "")
        .unwrap();
    assert_eq!(
        nfs.read("client1", &format!("{other}/note"), 3).unwrap(),
        "still room"
    );

    // Delete (purge) while exported: the subvolume and its mount go, the other stays served.
    let (s, v) = env.delete_wait(ALICE, ids[0]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "deleted", "{v}");
    let list = inside(srv, &format!("btrfs subvolume list -o {BTRFS_ROOT}"));
    assert!(!list.contains("full"), "{list}");
    let mounts = inside(srv, "cat /proc/self/mountinfo");
    assert!(!mounts.contains(&format!(" {full} ")), "{mounts}");
    assert_eq!(
        nfs.read("client1", &format!("{other}/note"), 4).unwrap(),
        "still room"
    );
    drop(fs);
}
