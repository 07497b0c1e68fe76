//! The ganesha side of the e2e tests: NFS reads and writes from the test bed's client hosts
//! (libnfs `nfs-cp` / `nfs-cat` in their network namespaces) and ganesha's live client entries
//! as its export manager shows them over D-Bus.

use super::Env;

/// NFS access to the ganesha server `srv1` of a test bed.
pub struct Nfs<'a> {
    pub env: &'a Env,
    pub addr: String,
}

impl<'a> Nfs<'a> {
    pub fn new(env: &'a Env) -> Self {
        let addr = env
            .server("srv1")
            .nfs_addr
            .clone()
            .expect("ganesha server address");
        Nfs { env, addr }
    }

    /// Client host `name` of the test bed.
    pub fn client(&self, name: &str) -> &nfsprov_testbed::ClientHost {
        self.env.tb.client(name).expect("client host")
    }

    /// The libnfs URL of `path` on the server over NFS version `v`; `extra` goes into the query.
    pub fn url(&self, path: &str, v: u8, extra: &str) -> String {
        format!("nfs://{}{path}?version={v}{extra}", self.addr)
    }

    /// Read `path` from client host `who`.
    pub fn read(&self, who: &str, path: &str, v: u8) -> Result<String, String> {
        let out = self
            .client(who)
            .run(&["nfs-cat", &self.url(path, v, "")])
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Write `content` to `path` (a file in a volume) from client host `who`; `extra` is added to
    /// the URL's query (`&uid=1000&gid=1001` writes as that user, else as root).
    pub fn write(
        &self,
        who: &str,
        path: &str,
        v: u8,
        content: &str,
        extra: &str,
    ) -> Result<(), String> {
        let local = self.env.dir.path().join(format!(
            "{who}-upload-{}",
            path.trim_start_matches('/').replace('/', "_")
        ));
        std::fs::write(&local, content).unwrap();
        let client = self.env.tb.client(who).expect("client host");
        let out = client
            .run(&["nfs-cp", local.to_str().unwrap(), &self.url(path, v, extra)])
            .unwrap();
        let _ = std::fs::remove_file(&local);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Nfs<'_> {
    /// `nfs-cp` of the local file `local` to `path` from client host `who` as root: its exit
    /// status and output.
    pub fn copy(&self, who: &str, local: &std::path::Path, path: &str, v: u8) -> (bool, String) {
        let out = self
            .client(who)
            .run_timeout(
                &["nfs-cp", local.to_str().unwrap(), &self.url(path, v, "")],
                std::time::Duration::from_secs(180),
            )
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Like [`Nfs::write`] as root, but from a process running as uid 1000 gid 1001, so libnfs
    /// cannot bind a privileged port.
    pub fn write_unprivileged(
        &self,
        who: &str,
        path: &str,
        v: u8,
        content: &str,
    ) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let local = tempfile::Builder::new()
            .prefix("nfsprov-unprivileged-")
            .tempfile_in("/tmp")
            .unwrap();
        std::fs::write(local.path(), content).unwrap();
        std::fs::set_permissions(local.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let client = self.env.tb.client(who).expect("client host");
        let out = client
            .run(&[
                "setpriv",
                "--reuid=1000",
                "--regid=1001",
                "--clear-groups",
                "nfs-cp",
                local.path().to_str().unwrap(),
                &self.url(path, v, ""),
            ])
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// One client entry of a live ganesha export: the client as ganesha shows it and the numbers
/// that follow it in `DisplayExport`'s reply (the eighth is the export option bits).
#[derive(Debug, Clone)]
pub struct LiveEntry {
    pub name: String,
    pub numbers: Vec<i64>,
}

impl LiveEntry {
    /// What the entry holds, as `RW/Root_Squash anon 65534:65534 secure sec=sys`: access and
    /// squash, the anonymous uid and gid (its fifth and sixth numbers), whether a privileged
    /// port is required and the accepted auth flavours, from the option bits (ganesha 4.3's
    /// include/fsal_types.h: ROOT_ID_SQUASH 0x1, ROOT_SQUASH 0x2, ALL_SQUASH 0x4, WRITE_ACCESS
    /// 0x40, PRIVILEGED_PORT 0x200, AUTH_NONE 0x1000, AUTH_UNIX 0x2000, RPCSEC_GSS_NONE 0x4000,
    /// _INTG 0x8000, _PRIV 0x10000).
    pub fn describe(&self) -> String {
        let n = |i: usize| self.numbers.get(i).copied().unwrap_or(-1);
        let bits = n(7);
        let access = if bits & 0x40 != 0 { "RW" } else { "RO" };
        let squash = if bits & 0x4 != 0 {
            "All_Squash"
        } else if bits & 0x3 != 0 {
            "Root_Squash"
        } else {
            "No_Root_Squash"
        };
        let port = if bits & 0x200 != 0 {
            "secure"
        } else {
            "insecure"
        };
        let flavours: Vec<&str> = [
            (0x1000, "none"),
            (0x2000, "sys"),
            (0x4000, "krb5"),
            (0x8000, "krb5i"),
            (0x10000, "krb5p"),
        ]
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
        format!(
            "{access}/{squash} anon {}:{} {port} sec={}",
            n(4),
            n(5),
            flavours.join(":")
        )
    }
}

/// The export id nfsprov gave the volume at `path` on ganesha server `server` (from its file).
pub fn export_id(env: &Env, server: &str, path: &str) -> u16 {
    let srv = env.server(server);
    let conf = std::fs::read_to_string(srv.ganesha_conf_dir().join("nfsprov.conf")).unwrap();
    let block = conf
        .split("EXPORT {")
        .find(|b| b.contains(&format!("Path = \"{path}\";")))
        .unwrap_or_else(|| panic!("no EXPORT block for {path} in:\n{conf}"));
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("Export_Id = "))
        .and_then(|v| v.trim_end_matches(';').parse().ok())
        .unwrap()
}

/// ganesha's live client entries of the export at `path`, over D-Bus (`DisplayExport`).
pub fn live_entries(env: &Env, server: &str, path: &str) -> Result<Vec<LiveEntry>, String> {
    let id = export_id(env, server, path);
    let out = env
        .server(server)
        .run_inside(&format!(
            "dbus-send --system --print-reply --reply-timeout=5000 --dest=org.ganesha.nfsd \
             /org/ganesha/nfsd/ExportMgr org.ganesha.nfsd.exportmgr.DisplayExport uint16:{id}"
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "DisplayExport {id}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut entries = Vec::new();
    let Some(array) = text.split_once("array [").map(|(_, a)| a) else {
        return Ok(entries);
    };
    for l in array.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("string \"") {
            entries.push(LiveEntry {
                name: name.trim_end_matches('"').to_string(),
                numbers: Vec::new(),
            });
        } else if let Some(e) = entries.last_mut()
            && let Some(n) = l.split_whitespace().nth(1).and_then(|n| n.parse().ok())
        {
            e.numbers.push(n);
        }
    }
    Ok(entries)
}
