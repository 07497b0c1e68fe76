//! The nfs-ganesha backend (FSAL VFS): nfsprov owns one file of `EXPORT` blocks,
//! `/etc/ganesha/nfsprov.conf`, `%include`d from the server's ganesha.conf. Each volume has a
//! stable `Export_Id`; each client rule becomes a `CLIENT` block. Changes are applied live with
//! SIGHUP (ganesha re-reads its exports without a restart and without touching other exports)
//! and verified by reading the live export list back.
//!
//! exports(5) options map to ganesha settings as below; an option with no faithful mapping is
//! refused before anything is recorded (`spec::ganesha::check_options`).
//!
//! | exports(5) | ganesha `CLIENT` setting |
//! |---|---|
//! | `rw` / `ro` (default `ro`) | `Access_Type = RW` / `RO` |
//! | `root_squash` (default) / `no_root_squash` / `all_squash` | `Squash = Root_Squash` / `No_Root_Squash` / `All_Squash` |
//! | `no_all_squash` | nothing (the squash setting above decides) |
//! | `anonuid=N` / `anongid=N` (default 65534) | `Anonymous_Uid = N` / `Anonymous_Gid = N` (65534 when not given: ganesha's default is 4294967294) |
//! | `secure` (default) / `insecure` | `PrivilegedPort = true` / `false` (`true` when neither is given: ganesha's default is `false`) |
//! | `sec=sys:krb5...` (default `sys`) | `SecType = sys, krb5, ...` (`sys` when not given: ganesha's default adds AUTH_NONE) |
//! | `sync`, `no_subtree_check`, `no_wdelay`, `hide`, `nocrossmnt` | nothing: ganesha already behaves so |
//! | `async`, `subtree_check`, `wdelay`, `nohide`, `crossmnt`, `secure_locks`, `insecure_locks`, `nordirplus`, `pnfs`, `no_pnfs`, `security_label`, `acl`, `no_acl` | refused |
//!
//! Clients are written the way ganesha 4.3's config lexer (`conf_lex.l`) reads them, never
//! quoted (a quoted string is not a client to it), and a client it would read differently
//! from exports(5) is refused before anything is recorded (`spec::ganesha::check_client`):
//!
//! | exports(5) client | written as | ganesha holds it as |
//! |---|---|---|
//! | `*` | `*` | any client |
//! | `10.0.0.1`, `::1` | as is (`0.0.0.0` as `0.0.0.0/32`: bare it means any client) | that address |
//! | `10.0.0.0/24`, `fd00::/64` | network address and prefix (`10.0.0.5/24` as `10.0.0.0/24`) | that network |
//! | `*.example.com`, `node?.lab` | as is | a pattern matched against the client's name (and address text) |
//! | `@ng` | as is | NIS netgroup `ng` |
//! | `host.example` | as is | the addresses the name resolves to on the server when ganesha reads the file |
//! | `/0` networks; IPv6 prefixes 100-127 | refused | its lexer has no token for them |
//! | IPv4-mapped IPv6 (`::ffff:a.b.c.d`) | refused | it compares such clients as IPv4, so they never match |
//! | host names starting with a digit or spelled `yes`/`no`/`true`/`false`/`on`/`off` | refused | read as a number or a boolean |
//! | wildcards that could match an address's text (`*.*`, `a*`) or that start with `?` and have no other `*`/`?` | refused | matched against the address too / read as a host name |
//! | netgroups starting with a digit or over 63 characters | refused | its lexer and its length limit |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::{Backend, Rendered, blame_by_path};
use crate::model::{BackendKind, ClientRule, VolumeId};
use crate::plan::{Export, Plan};
use crate::remote::{Arg, Lit, Script};
use crate::spec::ganesha::{Held, held};
use crate::spec::{ClientSpec, ExportOption, ExportOptions};

pub struct Ganesha;

pub const CONF_FILE: &str = "/etc/ganesha/nfsprov.conf";

/// The `CLIENT` block settings for one rule, in a stable order.
fn client_settings(options: &ExportOptions) -> Vec<(&'static str, String)> {
    let mut access = "RO";
    let mut squash = "Root_Squash";
    let mut out = Vec::new();
    for o in options.iter() {
        match o {
            ExportOption::Rw => access = "RW",
            ExportOption::Ro => access = "RO",
            ExportOption::NoRootSquash => squash = "No_Root_Squash",
            ExportOption::AllSquash => squash = "All_Squash",
            _ => {}
        }
    }
    out.push(("Access_Type", access.to_string()));
    out.push(("Squash", squash.to_string()));
    for o in options.iter() {
        match o {
            ExportOption::AnonUid(n) => out.push(("Anonymous_Uid", n.to_string())),
            ExportOption::AnonGid(n) => out.push(("Anonymous_Gid", n.to_string())),
            ExportOption::Insecure => out.push(("PrivilegedPort", "false".into())),
            ExportOption::Secure => out.push(("PrivilegedPort", "true".into())),
            ExportOption::Sec(f) => out.push((
                "SecType",
                f.flavors()
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            _ => {}
        }
    }
    // exports(5) squashes to 65534 unless told otherwise, takes requests from privileged
    // ports only and with AUTH_SYS only; ganesha's own defaults are -2 (4294967294), any port
    // and AUTH_NONE too, so exports(5)'s defaults are written out.
    let defaults = [
        ("Anonymous_Uid", DEFAULT_ANON_ID.to_string()),
        ("Anonymous_Gid", DEFAULT_ANON_ID.to_string()),
        ("PrivilegedPort", "true".to_string()),
        ("SecType", "sys".to_string()),
    ];
    for (key, value) in defaults {
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, value));
        }
    }
    out
}

/// exports(5)'s `anonuid`/`anongid` when none is given.
const DEFAULT_ANON_ID: u32 = 65534;

/// One `EXPORT` block. Values are validated types (paths of a strict charset, clients in
/// exports(5) syntax, numbers), so no quoting beyond ganesha's own `"..."` for paths is needed.
pub fn export_block(export_id: u32, path: &str, clients: &[ClientRule]) -> String {
    let mut b = String::new();
    b.push_str("EXPORT {\n");
    b.push_str(&format!("    Export_Id = {export_id};\n"));
    b.push_str(&format!("    Path = \"{path}\";\n"));
    b.push_str(&format!("    Pseudo = \"{path}\";\n"));
    b.push_str("    Protocols = 3, 4;\n");
    b.push_str("    Transports = TCP;\n");
    // Nobody gets in unless a CLIENT block below lets them.
    b.push_str("    Access_Type = None;\n");
    b.push_str("    FSAL { Name = VFS; }\n");
    for c in clients {
        b.push_str("    CLIENT {\n");
        b.push_str(&format!("        Clients = {};\n", client_text(&c.host)));
        for (k, v) in client_settings(&c.options) {
            b.push_str(&format!("        {k} = {v};\n"));
        }
        b.push_str("    }\n");
    }
    b.push_str("}\n");
    b
}

/// The text after `Clients =`: unquoted, in the lexer's own token forms. A client refused by
/// `check_client` (only in rows recorded before that check) is written as given, so ganesha
/// names the line it rejects.
fn client_text(c: &ClientSpec) -> String {
    match held(c) {
        Ok(Held::Anyone) => "*".into(),
        Ok(Held::Net(IpAddr::V4(a), 32)) if !a.is_unspecified() => a.to_string(),
        // bare `0.0.0.0` is ganesha's "any client"
        Ok(Held::Net(IpAddr::V4(a), p)) => format!("{a}/{p}"),
        // its lexer takes no `/128`
        Ok(Held::Net(IpAddr::V6(a), 128)) => a.to_string(),
        Ok(Held::Net(IpAddr::V6(a), p)) => format!("{a}/{p}"),
        Ok(Held::Wildcard(w)) => w,
        Ok(Held::Netgroup(n)) => format!("@{n}"),
        Ok(Held::Host(h)) => h,
        Err(_) => c.to_string(),
    }
}

/// ganesha's live state: export id -> path, the client entries of the exports inspected (or
/// the export manager's error for one), and what the host names among their clients resolve
/// to on the server.
#[derive(Debug, Default)]
pub struct LiveExports {
    pub exports: BTreeMap<u32, String>,
    pub clients: BTreeMap<u32, Vec<LiveClient>>,
    pub display_errors: BTreeMap<u32, String>,
    pub resolved: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// One client entry of a live export (from the export manager's `DisplayExport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveClient {
    pub name: String,
    /// ganesha's export option bits.
    pub options: u32,
}

// ganesha's export option bits (include/export_mgr.h, EXPORT_OPTION_*).
const SQUASH_ROOT_ID: u32 = 0x1;
const SQUASH_ROOT: u32 = 0x2;
const SQUASH_ALL: u32 = 0x4;
const SQUASH_MASK: u32 = SQUASH_ROOT_ID | SQUASH_ROOT | SQUASH_ALL;
const PERM_WRITE: u32 = 0x40;

/// The write and squash bits a client rule must produce.
fn expected_bits(options: &ExportOptions) -> u32 {
    let m = client_settings(options);
    let mut bits = 0;
    if m.iter().any(|(k, v)| *k == "Access_Type" && v == "RW") {
        bits |= PERM_WRITE;
    }
    match m
        .iter()
        .find(|(k, _)| *k == "Squash")
        .map(|(_, v)| v.as_str())
    {
        Some("All_Squash") => bits |= SQUASH_ALL,
        Some("No_Root_Squash") => {}
        _ => bits |= SQUASH_ROOT,
    }
    bits
}

fn describe_bits(bits: u32) -> String {
    let access = if bits & PERM_WRITE != 0 { "RW" } else { "RO" };
    let squash = if bits & SQUASH_ALL != 0 {
        "All_Squash"
    } else if bits & (SQUASH_ROOT | SQUASH_ROOT_ID) != 0 {
        "Root_Squash"
    } else {
        "No_Root_Squash"
    };
    format!("{access}/{squash}")
}

/// A live entry's `addr/prefix`, as ganesha shows NETWORK_CLIENTs.
fn live_net(name: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = name.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

/// Shell functions run on the server. `nfsprov_apply` sends SIGHUP, waits (bounded) for
/// ganesha to log that it re-read its exports, prints ganesha's complaints about nfsprov's file
/// and fails if there were any, if ganesha died, or if it could not parse its configuration at
/// all (then it re-reads nothing; its own errors are printed: a server-wide failure).
/// `nfsprov_live` prints the export manager's export list and, for each id in its first
/// argument, the export's client entries, over ganesha's D-Bus; then, for each further argument
/// (a host name), the addresses it resolves to there, as ganesha resolved them (getaddrinfo,
/// same files and resolver).
/// `nfsprov_svmount ROOT SUB` bind-mounts a volume's btrfs subvolume on itself (once; reached
/// without following a symbolic link): ganesha's FSAL VFS (Debian's build has no libbtrfsutil)
/// knows only the file systems in the mount table, and a subvolume has its own `st_dev` but is
/// not listed there, so without the mount ganesha refuses the export with
/// "resolve_posix_filesystem(<path>) returned No such file or directory (2)".
/// `nfsprov_svumount ROOT SUB` takes that mount away (lazily: ganesha may hold files open in it
/// until the reload drops the export) before the volume is removed or moved to the trash.
const PRELUDE: &str = r#"nfsprov_l=/var/log/ganesha/ganesha.log
nfsprov_dbus() { dbus-send --system --print-reply --reply-timeout=5000 --dest=org.ganesha.nfsd /org/ganesha/nfsd/ExportMgr "$@"; }
nfsprov_gpid() {
  nfsprov_p=$(cat /run/ganesha/ganesha.pid 2>/dev/null) && kill -0 "$nfsprov_p" 2>/dev/null &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$nfsprov_p/status" 2>/dev/null
}
nfsprov_apply() {
  nfsprov_gpid || { echo "ganesha is not running (no live process in /run/ganesha/ganesha.pid)"; return 2; }
  nfsprov_s=$(wc -c < "$nfsprov_l" 2>/dev/null || echo 0)
  kill -HUP "$nfsprov_p" || return 2
  nfsprov_i=0; nfsprov_refused=
  while [ "$nfsprov_i" -lt 100 ]; do
    nfsprov_n=$(tail -c +$((nfsprov_s + 1)) "$nfsprov_l" 2>/dev/null)
    case $nfsprov_n in *'Reread exports complete'*) break;; esac
    case $nfsprov_n in *'Error while parsing new configuration file'*) nfsprov_refused=1; sleep 0.1; break;; esac
    [ -r "$nfsprov_l" ] || { sleep 1; break; }
    nfsprov_gpid || break
    sleep 0.1; nfsprov_i=$((nfsprov_i + 1))
  done
  nfsprov_e=$(tail -c +$((nfsprov_s + 1)) "$nfsprov_l" 2>/dev/null | grep -E "nfsprov\.conf|doesn't match|errors found block EXPORT")
  [ -n "$nfsprov_e" ] && printf '%s
' "$nfsprov_e"
  nfsprov_gpid || { echo "ganesha exited while re-reading its exports"; return 2; }
  if [ -n "$nfsprov_refused" ]; then
    tail -c +$((nfsprov_s + 1)) "$nfsprov_l" 2>/dev/null | grep ':CRIT :' | grep -v 'nfsprov\.conf' | tail -n 5
    echo "ganesha refused its configuration and kept its exports as they were"
    return 1
  fi
  [ -z "$nfsprov_e" ]
}
nfsprov_live() {
  nfsprov_gpid || { echo "ganesha is not running"; return 0; }
  nfsprov_dbus org.ganesha.nfsd.exportmgr.ShowExports
  for nfsprov_x in $1; do
    echo "=== display $nfsprov_x"
    nfsprov_dbus org.ganesha.nfsd.exportmgr.DisplayExport "uint16:$nfsprov_x" 2>&1
  done
  shift
  for nfsprov_x in "$@"; do
    echo "=== resolve $nfsprov_x"
    getent ahosts "$nfsprov_x"
  done
}
nfsprov_svmount() {
  if nfsprov_in "$1" "$2" && nfsprov_issv && ! mountpoint -q -- "$PWD"; then
    mount --bind -- "$PWD" "$PWD" 2>&1 || echo "$1/$2: bind-mounting the btrfs subvolume on itself failed, so ganesha cannot export it"
  fi
  cd /
}
nfsprov_svumount() {
  if nfsprov_in "$1" "$2" && mountpoint -q -- "$PWD"; then
    nfsprov_mp=$PWD; cd /; umount -l -- "$nfsprov_mp"
  fi
  cd /
}"#;

impl Backend for Ganesha {
    type Live = LiveExports;
    const NAME: &'static str = BackendKind::Ganesha.as_str();
    // ganesha reads only the %include'd file, so the temporary twin is ignored.
    const FILES: &'static str = "nfsprov_d=/etc/ganesha; nfsprov_f=/etc/ganesha/nfsprov.conf; nfsprov_t=/etc/ganesha/.nfsprov.conf.tmp";

    const FENCE_DIR: &'static str = "/etc/ganesha";

    const RELOAD: &'static str = "nfsprov_apply";
    const MOUNTS_SUBVOLUMES: bool = true;

    fn entry(e: &Export) -> String {
        export_block(e.export_id, &e.path, &e.clients)
    }

    fn prelude(s: &mut Script) {
        s.line(&[Lit(PRELUDE)]);
    }

    /// The whole live list, the clients of every export not already verified earlier and the
    /// addresses of the host names among them.
    fn read_live(s: &mut Script, plan: &Plan) {
        let inspected = || plan.exports.iter().filter(|e| inspects(e));
        let ids: Vec<String> = inspected().map(|e| e.export_id.to_string()).collect();
        let ids = ids.join(" ");
        let hosts: BTreeSet<String> = inspected()
            .flat_map(|e| &e.clients)
            .filter_map(|c| match held(&c.host) {
                Ok(Held::Host(h)) => Some(h),
                _ => None,
            })
            .collect();
        let mut words = vec![Lit("nfsprov_live"), Arg(&ids)];
        words.extend(hosts.iter().map(|h| Arg(h)));
        s.line(&words);
    }

    fn parse_live(text: &str) -> LiveExports {
        parse_live_exports(text)
    }

    fn check_export(live: &LiveExports, e: &Export, apply_output: &str) -> Vec<String> {
        let said = || {
            if apply_output.trim().is_empty() {
                String::new()
            } else {
                format!(" (ganesha said: {})", super::tail(apply_output))
            }
        };
        match live.exports.get(&e.export_id) {
            Some(p) if *p == e.path => {}
            Some(p) => {
                return vec![format!(
                    "ganesha's live export {} is {p}, expected {}{}",
                    e.export_id,
                    e.path,
                    said()
                )];
            }
            None => {
                return vec![format!(
                    "ganesha has no live export {} for {} after reload{}",
                    e.export_id,
                    e.path,
                    said()
                )];
            }
        }
        if !inspects(e) {
            // Not inspected in this pass (already verified when it was applied).
            return Vec::new();
        }
        if let Some(err) = live.display_errors.get(&e.export_id) {
            return vec![format!(
                "ganesha's export manager did not show export {}'s clients: {err}",
                e.export_id
            )];
        }
        let Some(clients) = live.clients.get(&e.export_id) else {
            return vec![format!(
                "ganesha's export manager did not show export {}'s clients (no answer read back)",
                e.export_id
            )];
        };
        check_clients(live, e, clients)
    }

    fn is_exported(live: &LiveExports, path: &str) -> bool {
        live.exports.values().any(|p| p == path)
    }

    fn blame(line: &str, rendered: &Rendered, plan: &Plan) -> Option<VolumeId> {
        // ganesha names the config line of a parse error: "... nfsprov.conf:12 ...".
        if let Some(pos) = line.find("nfsprov.conf:") {
            let digits: String = line[pos + "nfsprov.conf:".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Some(v) = digits
                .parse::<usize>()
                .ok()
                .and_then(|n| rendered.line_map.get(&n))
            {
                return Some(*v);
            }
        }
        if let Some(pos) = line.find("Export_Id") {
            let digits: String = line[pos..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(id) = digits.parse::<u32>()
                && let Some(e) = plan.exports.iter().find(|e| e.export_id == id)
            {
                return Some(e.volume);
            }
        }
        blame_by_path(line, plan)
    }

    fn entries_in(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut current: Option<(String, String)> = None;
        let mut depth = 0i32;
        for l in text.lines() {
            if l.trim_start().starts_with('#') {
                continue;
            }
            if depth == 0 && l.trim_start().starts_with("EXPORT") {
                current = Some((String::new(), String::new()));
            }
            if let Some((path, block)) = current.as_mut() {
                block.push_str(l);
                block.push('\n');
                if let Some(rest) = l.trim().strip_prefix("Path = \"") {
                    *path = rest.trim_end_matches("\";").to_string();
                }
            }
            depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
            if depth <= 0 {
                depth = 0;
                if let Some(done) = current.take() {
                    out.push(done);
                }
            }
        }
        out
    }
}

/// Whether a pass reads back this export's client entries.
fn inspects(e: &Export) -> bool {
    e.is_desired && !e.was_available
}

/// Compare the live client entries of one export with its rules, in order (ganesha keeps them
/// in the file's order): each rule must be shown as ganesha holds it; a host name as the
/// addresses it resolves to on the server. A rule is never compared with another rule's entry.
fn check_clients(live: &LiveExports, e: &Export, clients: &[LiveClient]) -> Vec<String> {
    let id = e.export_id;
    let mut problems = Vec::new();
    let mut next = 0;
    let mut missing = false;
    for rule in &e.clients {
        let host = rule.host.to_string();
        let entries: &[LiveClient] = match held(&rule.host) {
            Ok(Held::Host(h)) => {
                let Some(addrs) = live.resolved.get(&h).filter(|a| !a.is_empty()) else {
                    problems.push(format!(
                        "client {host} of ganesha's live export {id} does not resolve on the server"
                    ));
                    return problems;
                };
                let end = (next + addrs.len()).min(clients.len());
                let got = &clients[next..end];
                if got.is_empty() {
                    missing = true;
                    break;
                }
                let exact: BTreeSet<IpAddr> = got
                    .iter()
                    .filter_map(|c| match live_net(&c.name) {
                        Some((a @ IpAddr::V4(_), 32)) | Some((a @ IpAddr::V6(_), 128)) => Some(a),
                        _ => None,
                    })
                    .collect();
                if got.len() != addrs.len() || exact != *addrs {
                    problems.push(format!(
                        "ganesha's live export {id} holds {} for client {host}, expected its addresses {}",
                        names(got),
                        addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
                    ));
                    return problems;
                }
                next = end;
                got
            }
            want => {
                let Some(c) = clients.get(next) else {
                    missing = true;
                    break;
                };
                let same = match &want {
                    Ok(Held::Anyone) => c.name == "*",
                    Ok(Held::Net(a, p)) => live_net(&c.name) == Some((*a, *p)),
                    Ok(Held::Wildcard(w)) => c.name == *w,
                    Ok(Held::Netgroup(n)) => c.name == *n,
                    Ok(Held::Host(_)) | Err(_) => false,
                };
                if !same {
                    problems.push(format!(
                        "ganesha's live export {id} client entry {} is {}, expected {host}",
                        next + 1,
                        c.name
                    ));
                    return problems;
                }
                next += 1;
                std::slice::from_ref(c)
            }
        };
        let want = expected_bits(&rule.options);
        for c in entries {
            let have = c.options & (PERM_WRITE | SQUASH_MASK);
            if have != want {
                problems.push(format!(
                    "ganesha's live export {id} client {host} has access {}, expected {}",
                    describe_bits(have),
                    describe_bits(want)
                ));
            }
        }
    }
    if missing || next != clients.len() {
        problems.push(format!(
            "ganesha's live export {id} has {} client entries ({}), expected entries for {}",
            clients.len(),
            names(clients),
            e.clients
                .iter()
                .map(|c| c.host.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    problems
}

fn names(clients: &[LiveClient]) -> String {
    if clients.is_empty() {
        return "none".into();
    }
    clients
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse `nfsprov_live`'s output: dbus-send's print of `ShowExports` (each export a
/// `uint16 <id>` line followed by `string "<path>"`); per inspected export a `=== display <id>`
/// line and the print of `DisplayExport` (id, path, pseudo, tag, then an array with one struct
/// per client: `string "<client>"` followed by nine numbers, the eighth of which is the option
/// bits) or dbus-send's `Error ...`; per host name a `=== resolve <name>` line and
/// `getent ahosts`' lines (address first).
fn parse_live_exports(text: &str) -> LiveExports {
    let mut live = LiveExports::default();
    let text = format!("\n{text}");
    let mut sections = text.split("\n=== ");
    let show = sections.next().unwrap_or_default();
    let mut id: Option<u32> = None;
    for l in show.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("uint16 ") {
            id = n.trim().parse().ok();
        } else if let (Some(i), Some(p)) = (id, l.strip_prefix("string \"")) {
            live.exports.insert(i, p.trim_end_matches('"').to_string());
            id = None;
        }
    }
    for section in sections {
        let mut lines = section.lines();
        let head = lines.next().unwrap_or_default().trim();
        if let Some(name) = head.strip_prefix("resolve ") {
            let addrs = lines
                .filter_map(|l| l.split_whitespace().next()?.parse::<IpAddr>().ok())
                .collect();
            live.resolved.insert(name.to_string(), addrs);
            continue;
        }
        let Some(Ok(id)) = head.strip_prefix("display ").map(|n| n.parse::<u32>()) else {
            continue;
        };
        if let Some(err) = section
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Error "))
        {
            // Its first clause: the bus adds the caller's pid and serial after a `;`, so the
            // whole line differs on every pass and would read as news each time.
            let first = err.split("; ").next().unwrap_or(err);
            live.display_errors.insert(id, first.to_string());
            continue;
        }
        let mut clients = Vec::new();
        let mut in_array = false;
        let mut current: Option<(String, Vec<u64>)> = None;
        for l in lines.map(str::trim) {
            if l.starts_with("array [") {
                in_array = true;
            } else if !in_array {
                continue;
            } else if let Some(name) = l.strip_prefix("string \"") {
                current = Some((name.trim_end_matches('"').to_string(), Vec::new()));
            } else if l == "}" {
                if let Some((name, nums)) = current.take()
                    && let Some(options) = nums.get(7)
                {
                    clients.push(LiveClient {
                        name,
                        options: *options as u32,
                    });
                }
            } else if let Some((_, nums)) = current.as_mut()
                && let Some(v) = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<i64>().ok())
            {
                nums.push(v as u64);
            }
        }
        live.clients.insert(id, clients);
    }
    live
}

/// For tests and tooling: the mapping as key/value pairs per client.
pub fn mapping(options: &ExportOptions) -> HashMap<&'static str, String> {
    client_settings(options).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ClientSpec;
    use crate::spec::ganesha::check_client;

    fn rule(h: &str, o: &str) -> ClientRule {
        ClientRule {
            host: ClientSpec::parse(h).unwrap(),
            options: ExportOptions::parse(o).unwrap(),
        }
    }

    #[test]
    fn options_map_to_client_settings() {
        let m = mapping(&ExportOptions::parse("rw,no_root_squash,anonuid=7,anongid=8").unwrap());
        assert_eq!(m["Access_Type"], "RW");
        assert_eq!(m["Squash"], "No_Root_Squash");
        assert_eq!(m["Anonymous_Uid"], "7");
        assert_eq!(m["Anonymous_Gid"], "8");
        let m = mapping(&ExportOptions::parse("").unwrap());
        assert_eq!(m["Access_Type"], "RO", "exports(5) defaults to ro");
        assert_eq!(m["Squash"], "Root_Squash");
        // exports(5) squashes to 65534 by default, ganesha to 4294967294; exports(5) wants a
        // privileged port and AUTH_SYS by default, ganesha any port and AUTH_NONE too
        // (tests/matrix.rs).
        assert_eq!(m["Anonymous_Uid"], "65534");
        assert_eq!(m["Anonymous_Gid"], "65534");
        assert_eq!(m["PrivilegedPort"], "true");
        assert_eq!(m["SecType"], "sys");
        let m = mapping(&ExportOptions::parse("anongid=0").unwrap());
        assert_eq!(
            (m["Anonymous_Uid"].as_str(), m["Anonymous_Gid"].as_str()),
            ("65534", "0")
        );
        let m = mapping(&ExportOptions::parse("all_squash,insecure,sec=krb5:sys").unwrap());
        assert_eq!(m["Squash"], "All_Squash");
        assert_eq!(m["PrivilegedPort"], "false");
        assert_eq!(m["SecType"], "krb5, sys");
    }

    #[test]
    fn block_and_entries_round_trip() {
        let b = export_block(
            7,
            "/srv/p/a",
            &[rule("10.0.0.0/24", "rw"), rule("*.lab.test", "ro")],
        );
        assert!(b.contains("Export_Id = 7;"));
        let text = format!(
            "{}{b}{}",
            super::super::HEADER,
            export_block(8, "/srv/p/b", &[rule("*", "rw")])
        );
        let entries = Ganesha::entries_in(&text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "/srv/p/a");
        assert_eq!(entries[0].1, b);
        assert_eq!(entries[1].0, "/srv/p/b");
    }

    /// Pins the spelling; that ganesha reads each so is proven by tests/matrix.rs.
    #[test]
    fn clients_are_written_as_ganesha_tokens() {
        for (client, text) in [
            ("*", "*"),
            ("*.lab.test", "*.lab.test"),
            ("node?.lab", "node?.lab"),
            ("@ng", "@ng"),
            ("10.0.0.1", "10.0.0.1"),
            ("0.0.0.0", "0.0.0.0/32"),
            ("10.0.0.5/24", "10.0.0.0/24"),
            ("10.0.0.0/255.255.0.0", "10.0.0.0/16"),
            ("::1", "::1"),
            ("fe80::1/10", "fe80::/10"),
            ("2001:db8::1/128", "2001:db8::1"),
            ("client1.test", "client1.test"),
        ] {
            let c = ClientSpec::parse(client).unwrap();
            assert_eq!(check_client(&c), Ok(()), "{client}");
            assert_eq!(client_text(&c), text, "{client}");
        }
    }

    const SHOW: &str = r#"method return time=1764070000.1 sender=:1.1 -> destination=:1.2 serial=9 reply_serial=2
   struct {
      int64 1764070000
      int32 1000
   }
   array [
      struct {
         uint16 0
         string "/"
         boolean true
      }
      struct {
         uint16 7
         string "/srv/p/a"
         boolean true
      }
   ]
=== display 7
method return time=1764070000.2 sender=:1.1 -> destination=:1.3 serial=10 reply_serial=2
   uint16 7
   string "/srv/p/a"
   string "/srv/p/a"
   string ""
   array [
      struct {
         string "10.213.9.101/32"
         int32 0
         byte 0
         byte 255
         int32 1
         int32 -1
         int32 -1
         uint32 0
         uint32 53490144
         uint32 0
      }
      struct {
         string "10.213.9.102/32"
         int32 0
         byte 0
         byte 255
         int32 1
         int32 -1
         int32 -1
         uint32 0
         uint32 53489826
         uint32 0
      }
   ]
"#;

    #[test]
    fn live_list_parsing() {
        let live = parse_live_exports(SHOW);
        assert_eq!(live.exports.get(&7).map(String::as_str), Some("/srv/p/a"));
        assert_eq!(live.exports.len(), 2);
        let c = &live.clients[&7];
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "10.213.9.101/32");
        assert_eq!(c[0].options, 53490144);
    }

    fn export(clients: Vec<ClientRule>) -> Export {
        Export {
            volume: VolumeId(1),
            path: "/srv/p/a".into(),
            root: "/srv/p".into(),
            sub: "a".into(),
            clients,
            is_desired: true,
            was_available: false,
            export_id: 7,
            generation: 1,
        }
    }

    #[test]
    fn live_clients_are_checked_against_the_rules() {
        let live = parse_live_exports(SHOW);
        let good = export(vec![
            rule("10.213.9.101", "rw,no_root_squash"),
            rule("10.213.9.102", "ro"),
        ]);
        assert!(Ganesha::check_export(&live, &good, "").is_empty());
        let bad = export(vec![rule("10.213.9.101", "ro"), rule("10.213.9.102", "ro")]);
        let p = Ganesha::check_export(&live, &bad, "");
        assert!(
            p[0].contains("has access RW/No_Root_Squash, expected RO/Root_Squash"),
            "{p:?}"
        );
        let mut moved = good.clone();
        moved.export_id = 8;
        let p = Ganesha::check_export(&live, &moved, "exportfs: x");
        assert!(p[0].contains("no live export 8"), "{p:?}");
    }

    #[test]
    fn a_live_client_of_another_name_is_a_mismatch() {
        let live = parse_live_exports(SHOW);
        // Same access bits as the live entries, but other clients: must not pass by position.
        let other = export(vec![
            rule("10.213.9.201", "rw,no_root_squash"),
            rule("10.213.9.102", "ro"),
        ]);
        let p = Ganesha::check_export(&live, &other, "");
        assert!(
            p.iter()
                .any(|m| m.contains("client entry 1 is 10.213.9.101/32, expected 10.213.9.201")),
            "{p:?}"
        );
        let swapped = export(vec![
            rule("10.213.9.102", "ro"),
            rule("10.213.9.101", "rw,no_root_squash"),
        ]);
        assert!(!Ganesha::check_export(&live, &swapped, "").is_empty());
        let fewer = export(vec![rule("10.213.9.101", "rw,no_root_squash")]);
        let p = Ganesha::check_export(&live, &fewer, "");
        assert!(p[0].contains("has 2 client entries"), "{p:?}");
    }

    #[test]
    fn an_error_reply_of_the_export_manager_is_a_mismatch() {
        let text = SHOW.split("=== display").next().unwrap().to_string()
            + "=== display 7\nError org.freedesktop.DBus.Error.InvalidArgs: Export id not found\n";
        let live = parse_live_exports(&text);
        let p = Ganesha::check_export(&live, &export(vec![rule("10.213.9.101", "rw")]), "");
        assert!(p[0].contains("Export id not found"), "{p:?}");
        // The bus's refusal names the caller (pid, serial): only its first clause is kept.
        let denied = SHOW.split("=== display").next().unwrap().to_string()
            + "=== display 7\nError org.freedesktop.DBus.Error.AccessDenied: Rejected send \
               message, 2 matched rules; type=\"method_call\", sender=\":1.7\" (uid=0 pid=8081)\n";
        let live = parse_live_exports(&denied);
        assert_eq!(
            live.display_errors[&7],
            "Error org.freedesktop.DBus.Error.AccessDenied: Rejected send message, 2 matched rules"
        );
        // Nothing read back for an export that should have been inspected.
        let shown_only = SHOW.split("=== display").next().unwrap();
        let live = parse_live_exports(shown_only);
        let p = Ganesha::check_export(&live, &export(vec![rule("10.213.9.101", "rw")]), "");
        assert!(p[0].contains("did not show export 7"), "{p:?}");
    }

    #[test]
    fn host_names_are_checked_against_their_addresses_on_the_server() {
        let resolve = "=== resolve client1.test\n\
                       10.213.9.101    STREAM client1.test\n\
                       10.213.9.101    DGRAM  \n\
                       10.213.9.101    RAW    \n\
                       === resolve client2.test\n\
                       10.213.9.102    STREAM client2.test\n";
        let live = parse_live_exports(&format!("{SHOW}{resolve}"));
        assert_eq!(live.resolved["client1.test"].len(), 1);
        let good = export(vec![
            rule("client1.test", "rw,no_root_squash"),
            rule("client2.test", "ro"),
        ]);
        assert_eq!(
            Ganesha::check_export(&live, &good, ""),
            Vec::<String>::new()
        );
        let swapped = export(vec![
            rule("client2.test", "rw,no_root_squash"),
            rule("client1.test", "ro"),
        ]);
        let p = Ganesha::check_export(&live, &swapped, "");
        assert!(
            p[0].contains("holds 10.213.9.101/32 for client client2.test"),
            "{p:?}"
        );
        let unknown = export(vec![rule("nowhere.test", "rw")]);
        let p = Ganesha::check_export(&live, &unknown, "");
        assert!(p[0].contains("does not resolve on the server"), "{p:?}");
    }
}
