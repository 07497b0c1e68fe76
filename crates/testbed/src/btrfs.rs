//! A btrfs file system inside a simulated server: a sparse image file in the server's own
//! directory, formatted with `mkfs.btrfs`, attached to a loop device (`losetup -f --show`) and
//! mounted inside the server's mount namespace at `/srv/nfsprov/<name>` (on top of the
//! directory of that name in the data dir, which the host side keeps seeing as it was).
//!
//! Tear-down cannot leak a loop device: right after the mount the device is detached with
//! `losetup -d`, which the kernel turns into auto-clear, so the device is released as soon as
//! the file system is unmounted, by [`BtrfsMount`]'s `Drop` (also on a panic) or, at the latest,
//! when the server's mount namespace dies with its last process ([`crate::TestbedServer::stop`]).
//! At most [`MAX_LOOP_DEVICES`] are attached by one process at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use crate::{DATA_MOUNT, TestbedServer, apt_install};

/// How many loop devices one process (a test binary) attaches at most at a time.
pub const MAX_LOOP_DEVICES: usize = 4;

static ATTACHED: AtomicUsize = AtomicUsize::new(0);

/// Why this machine cannot hold a btrfs file system on a loop device, or `None` when it can
/// (installing btrfs-progs first if it is missing). A test that gets `Some(reason)` skips and
/// prints the reason: a kernel without loop devices or btrfs is a machine fact, not a failure.
pub fn unsupported() -> Option<String> {
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop device support: /dev/loop-control is missing".into());
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("btrfs"))
    {
        // The module may just not be loaded yet.
        let _ = Command::new("modprobe").arg("btrfs").status();
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("btrfs"))
        {
            return Some("the kernel has no btrfs (not in /proc/filesystems)".into());
        }
    }
    None
}

/// Install btrfs-progs when `mkfs.btrfs` or `btrfs` is missing.
pub fn ensure_packages() -> Result<()> {
    let have =
        |p: &str| Path::new("/usr/sbin").join(p).exists() || Path::new("/usr/bin").join(p).exists();
    if have("mkfs.btrfs") && have("btrfs") {
        return Ok(());
    }
    apt_install(&["btrfs-progs"])?;
    if !(have("mkfs.btrfs") && have("btrfs")) {
        bail!("mkfs.btrfs or btrfs still missing after apt-get install btrfs-progs");
    }
    Ok(())
}

/// A mounted btrfs file system of a server; unmounted and its image removed on drop.
pub struct BtrfsMount {
    server: TestbedServer,
    image: PathBuf,
    /// The path inside the server, e.g. `/srv/nfsprov/btrfs`.
    pub path: String,
    /// The loop device it was attached to, e.g. `/dev/loop3` (auto-clear).
    pub device: String,
    counted: bool,
}

/// Run `argv`; its stdout, or an error with what it printed.
pub(crate) fn run(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    if !out.status.success() {
        bail!(
            "{argv:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TestbedServer {
    /// Make a `size_bytes` (sparse) btrfs file system and mount it at `/srv/nfsprov/<name>`
    /// inside this (running) server; with `quota`, `btrfs quota enable` on it.
    pub fn mount_btrfs(&self, name: &str, size_bytes: u64, quota: bool) -> Result<BtrfsMount> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("btrfs mount name {name:?}: letters, digits and '-' only");
        }
        ensure_packages()?;
        if ATTACHED.fetch_add(1, Ordering::SeqCst) >= MAX_LOOP_DEVICES {
            ATTACHED.fetch_sub(1, Ordering::SeqCst);
            bail!("this process already has {MAX_LOOP_DEVICES} loop devices attached");
        }
        let mut mount = BtrfsMount {
            server: self.clone(),
            image: self.dir.join(format!("{name}.btrfs.img")),
            path: format!("{DATA_MOUNT}/{name}"),
            device: String::new(),
            counted: true,
        };
        let file = fs::File::create(&mount.image)
            .with_context(|| format!("creating {}", mount.image.display()))?;
        file.set_len(size_bytes)?;
        drop(file);
        run(&["mkfs.btrfs", "-q", &mount.image.to_string_lossy()])?;
        mount.device = run(&["losetup", "-f", "--show", &mount.image.to_string_lossy()])?
            .trim()
            .to_string();
        fs::create_dir_all(self.data_dir.join(name))?;
        let quota_cmd = if quota {
            format!("&& btrfs quota enable {p}", p = mount.path)
        } else {
            String::new()
        };
        let script = format!(
            "mount -t btrfs {dev} {p} {quota_cmd}",
            dev = mount.device,
            p = mount.path
        );
        let out = self.run_inside(&script)?;
        // Detach now: with the file system mounted this sets auto-clear, so the device goes
        // away with the last mount, whoever or whatever ends it.
        let _ = run(&["losetup", "-d", &mount.device]);
        if !out.status.success() {
            return Err(anyhow!(
                "mounting btrfs in server {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(mount)
    }
}

impl BtrfsMount {
    /// `btrfs quota enable` on this file system.
    pub fn enable_quota(&self) -> Result<()> {
        let out = self
            .server
            .run_inside(&format!("btrfs quota enable {}", self.path))?;
        if !out.status.success() {
            bail!(
                "btrfs quota enable: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The image file on the host.
    pub fn image(&self) -> &Path {
        &self.image
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        if self.server.is_running() {
            // Lazily when busy (a ganesha server's exports hold files open, subvolumes of it
            // are bind-mounted on themselves): the device then goes with the last user.
            let _ = self.server.run_inside(&format!(
                "umount {p} 2>/dev/null || umount -l {p}",
                p = self.path
            ));
        }
        // Attached by us and still there (the mount never happened): detach it.
        if let Ok(held) = run(&["losetup", "-j", &self.image.to_string_lossy()])
            && !held.trim().is_empty()
            && !self.device.is_empty()
        {
            let _ = run(&["losetup", "-d", &self.device]);
        }
        let _ = fs::remove_file(&self.image);
        if self.counted {
            ATTACHED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(all(test, feature = "e2e"))]
mod tests {
    use super::*;
    use crate::Testbed;

    /// Needs root and loop devices (like the rest of the test bed's own tests: e2e tier).
    #[test]
    fn btrfs_mount_has_quotas_and_goes_away() {
        if let Some(why) = unsupported() {
            eprintln!("skipping: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tb = crate::TestbedGuard(Testbed::up(&dir.path().join("tb"), 1).unwrap());
        let srv = &tb.servers[0];
        let m = srv.mount_btrfs("btrfs", 256 << 20, true).unwrap();
        let out = srv
            .run_inside(&format!("btrfs qgroup show {}", m.path))
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let image = m.image().to_path_buf();
        drop(m);
        let held = run(&["losetup", "-j", &image.to_string_lossy()]).unwrap();
        assert!(held.trim().is_empty(), "loop device still attached: {held}");
        assert!(!image.exists());
    }
}
