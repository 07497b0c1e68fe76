//! An XFS file system inside a simulated server, the sibling of [`crate::btrfs`]: a sparse
//! image file in the server's own directory, formatted with `mkfs.xfs`, attached to a loop
//! device and mounted inside the server's mount namespace at `/srv/nfsprov/<name>` with the
//! mount options asked for. The loop device is detached right after the mount (auto-clear),
//! so it goes with the unmount in [`XfsMount`]'s `Drop` or with the server's namespace.
//!
//! Kernels built without XFS quota (like the test machines of issue 12) mount XFS only
//! without quota options: `mount -o prjquota` fails there, and [`XfsMount`] reports it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::btrfs::run;
use crate::{DATA_MOUNT, TestbedServer, apt_install};

/// `mkfs.xfs` (xfsprogs 6.x) refuses file systems below 300 MiB.
pub const MIN_BYTES: u64 = 300 << 20;

/// Why this machine cannot hold an XFS file system on a loop device, or `None` when it can
/// (installing xfsprogs first if it is missing). A test that gets `Some(reason)` skips.
pub fn unsupported() -> Option<String> {
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop device support: /dev/loop-control is missing".into());
    }
    let has_xfs = || {
        fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().last() == Some("xfs"))
    };
    if !has_xfs() {
        let _ = Command::new("modprobe").arg("xfs").status();
        if !has_xfs() {
            return Some("the kernel has no xfs (not in /proc/filesystems)".into());
        }
    }
    ensure_packages().err().map(|e| e.to_string())
}

/// Install xfsprogs when `mkfs.xfs` or `xfs_quota` is missing.
pub fn ensure_packages() -> Result<()> {
    let have =
        |p: &str| Path::new("/usr/sbin").join(p).exists() || Path::new("/usr/bin").join(p).exists();
    if have("mkfs.xfs") && have("xfs_quota") {
        return Ok(());
    }
    apt_install(&["xfsprogs"])?;
    if !(have("mkfs.xfs") && have("xfs_quota")) {
        bail!("mkfs.xfs or xfs_quota still missing after apt-get install xfsprogs");
    }
    Ok(())
}

/// A mounted XFS file system of a server; unmounted and its image removed on drop.
pub struct XfsMount {
    server: TestbedServer,
    image: PathBuf,
    /// The path inside the server, e.g. `/srv/nfsprov/xfs`.
    pub path: String,
    device: String,
}

impl TestbedServer {
    /// Make a [`MIN_BYTES`] (sparse) XFS file system and mount it at `/srv/nfsprov/<name>`
    /// inside this (running) server with `options` (`-o`; empty: none).
    pub fn mount_xfs(&self, name: &str, options: &str) -> Result<XfsMount> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("xfs mount name {name:?}: letters, digits and '-' only");
        }
        if !options
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b',' || b == b'=')
        {
            bail!("xfs mount options {options:?}: letters, digits, ',' and '=' only");
        }
        ensure_packages()?;
        let mut mount = XfsMount {
            server: self.clone(),
            image: self.dir.join(format!("{name}.xfs.img")),
            path: format!("{DATA_MOUNT}/{name}"),
            device: String::new(),
        };
        fs::File::create(&mount.image)
            .with_context(|| format!("creating {}", mount.image.display()))?
            .set_len(MIN_BYTES)?;
        run(&["mkfs.xfs", "-q", &mount.image.to_string_lossy()])?;
        mount.device = run(&["losetup", "-f", "--show", &mount.image.to_string_lossy()])?
            .trim()
            .to_string();
        fs::create_dir_all(self.data_dir.join(name))?;
        let opts = if options.is_empty() {
            String::new()
        } else {
            format!("-o {options}")
        };
        let out = self.run_inside(&format!(
            "mount -t xfs {opts} {dev} {p}",
            dev = mount.device,
            p = mount.path
        ))?;
        // With the file system mounted this sets auto-clear; without, it frees the device.
        let _ = run(&["losetup", "-d", &mount.device]);
        if !out.status.success() {
            bail!(
                "mounting xfs ({options}) in server {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(mount)
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        if self.server.is_running() {
            let _ = self.server.run_inside(&format!("umount {}", self.path));
        }
        if let Ok(held) = run(&["losetup", "-j", &self.image.to_string_lossy()])
            && !held.trim().is_empty()
            && !self.device.is_empty()
        {
            let _ = run(&["losetup", "-d", &self.device]);
        }
        let _ = fs::remove_file(&self.image);
    }
}
