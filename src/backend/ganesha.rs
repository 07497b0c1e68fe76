//! The nfs-ganesha backend (FSAL VFS): nfsprov owns one file of `EXPORT` blocks,
//! `/etc/ganesha/nfsprov.conf`, `%include`d from the server's ganesha.conf. Each volume has a
//! stable `Export_Id`; each client rule becomes a `CLIENT` block. Changes are applied live with
//! SIGHUP (ganesha re-reads its exports without a restart and without touching other exports)
//! and verified by reading the live export list back.
//!
//! exports(5) options map to ganesha settings as below; an option with no faithful mapping is
//! refused before anything is recorded ([`check_options`]).
//!
//! | exports(5) | ganesha `CLIENT` setting |
//! |---|---|
//! | `rw` / `ro` (default `ro`) | `Access_Type = RW` / `RO` |
//! | `root_squash` (default) / `no_root_squash` / `all_squash` | `Squash = Root_Squash` / `No_Root_Squash` / `All_Squash` |
//! | `no_all_squash` | nothing (the squash setting above decides) |
//! | `anonuid=N` / `anongid=N` | `Anonymous_Uid = N` / `Anonymous_Gid = N` |
//! | `secure` (default) / `insecure` | `PrivilegedPort = true` / `false` |
//! | `sec=sys:krb5...` | `SecType = sys, krb5, ...` |
//! | `sync`, `no_subtree_check`, `no_wdelay`, `hide`, `nocrossmnt` | nothing: ganesha already behaves so |
//! | `async`, `subtree_check`, `wdelay`, `nohide`, `crossmnt`, `secure_locks`, `insecure_locks`, `nordirplus`, `pnfs`, `no_pnfs`, `security_label`, `acl`, `no_acl` | refused |

use std::collections::{BTreeMap, HashMap};

use super::{Backend, Rendered, blame_by_path};
use crate::model::{ClientRule, VolumeId};
use crate::plan::{Export, Plan};
use crate::remote::{Lit, Script};
use crate::spec::{ExportOption, ExportOptions};

pub struct Ganesha;

pub const CONF_FILE: &str = "/etc/ganesha/nfsprov.conf";
const HEADER: &str =
    "# Managed by nfsprov: this file is rewritten from nfsprov's database; edits are undone.\n";

/// Refuse options that ganesha cannot honour as exports(5) defines them.
pub fn check_options(options: &ExportOptions) -> Result<(), String> {
    for o in options.iter() {
        let ok = matches!(
            o,
            ExportOption::Rw
                | ExportOption::Ro
                | ExportOption::RootSquash
                | ExportOption::NoRootSquash
                | ExportOption::AllSquash
                | ExportOption::NoAllSquash
                | ExportOption::AnonUid(_)
                | ExportOption::AnonGid(_)
                | ExportOption::Secure
                | ExportOption::Insecure
                | ExportOption::Sec(_)
                | ExportOption::Sync
                | ExportOption::NoSubtreeCheck
                | ExportOption::NoWdelay
                | ExportOption::Hide
                | ExportOption::NoCrossMnt
        );
        if !ok {
            return Err(format!(
                "'{}' has no faithful equivalent on an nfs-ganesha server; see the option table in the README",
                o.keyword()
            ));
        }
    }
    Ok(())
}

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
    out
}

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
        b.push_str(&format!(
            "        Clients = {};\n",
            ganesha_client(&c.host.to_string())
        ));
        for (k, v) in client_settings(&c.options) {
            b.push_str(&format!("        {k} = {v};\n"));
        }
        b.push_str("    }\n");
    }
    b.push_str("}\n");
    b
}

/// ganesha spells "anyone" `*` too, but needs quotes around values with `*`, `?`, `@` or `:`.
fn ganesha_client(host: &str) -> String {
    if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '/')
    {
        host.to_string()
    } else {
        format!("\"{host}\"")
    }
}

/// Live exports: export id -> path.
pub type LiveExports = BTreeMap<u32, String>;

impl Backend for Ganesha {
    type Live = LiveExports;
    const NAME: &'static str = "ganesha";
    // ganesha reads only the %include'd file, so the temporary twin is ignored.
    const FILES: &'static str = "nfsprov_d=/etc/ganesha; nfsprov_f=/etc/ganesha/nfsprov.conf; nfsprov_t=/etc/ganesha/.nfsprov.conf.tmp";

    fn render(plan: &Plan) -> Rendered {
        let mut r = Rendered {
            text: String::from(HEADER),
            ..Rendered::default()
        };
        let mut line = HEADER.lines().count();
        for e in &plan.exports {
            if e.clients.is_empty() {
                continue;
            }
            let block = export_block(e.export_id, &e.path, &e.clients);
            for _ in block.lines() {
                line += 1;
                r.line_map.insert(line, e.volume);
            }
            r.text.push_str(&block);
            r.entries.push((e.volume, block));
        }
        r
    }

    fn apply(s: &mut Script) {
        s.line(&[Lit("  nfsprov_apply")]);
        s.line(&[Lit("  nfsprov_rc=$?")]);
        s.line(&[Lit("  (exit $nfsprov_rc)")]);
        s.marker_rc("apply", "");
        s.line(&[Lit("  if [ \"$nfsprov_rc\" != 0 ] && [ \"$nfsprov_w\" = 1 ]; then mv -f \"$nfsprov_f.prev\" \"$nfsprov_f\"; nfsprov_apply >/dev/null 2>&1")]);
        s.marker_rc("rollback", "");
        s.line(&[Lit("  fi")]);
    }

    fn read_live(s: &mut Script) {
        s.line(&[Lit("nfsprov_live")]);
    }

    fn parse_live(text: &str) -> LiveExports {
        parse_live_exports(text)
    }

    fn check_export(live: &LiveExports, e: &Export, apply_output: &str) -> Vec<String> {
        match live.get(&e.export_id) {
            Some(p) if *p == e.path => Vec::new(),
            Some(p) => vec![format!(
                "ganesha's live export {} is {p}, expected {}",
                e.export_id, e.path
            )],
            None => {
                let said = super::tail(apply_output);
                vec![format!(
                    "ganesha has no live export {} for {} after reload (ganesha said: {said})",
                    e.export_id, e.path
                )]
            }
        }
    }

    fn is_exported(live: &LiveExports, path: &str) -> bool {
        live.values().any(|p| p == path)
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

/// Parse the live export list (see `nfsprov_live` in the server prelude): lines
/// `<export id> <path>`.
fn parse_live_exports(text: &str) -> LiveExports {
    let mut m = LiveExports::new();
    for l in text.lines() {
        if let Some((id, path)) = l.trim().split_once(' ')
            && let Ok(id) = id.parse::<u32>()
        {
            m.insert(id, path.trim().to_string());
        }
    }
    m
}

/// For tests and tooling: the mapping as key/value pairs per client.
pub fn mapping(options: &ExportOptions) -> HashMap<&'static str, String> {
    client_settings(options).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ClientSpec;

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
        let m = mapping(&ExportOptions::parse("all_squash,insecure,sec=krb5:sys").unwrap());
        assert_eq!(m["Squash"], "All_Squash");
        assert_eq!(m["PrivilegedPort"], "false");
        assert_eq!(m["SecType"], "krb5, sys");
    }

    #[test]
    fn unfaithful_options_are_refused() {
        for bad in [
            "async",
            "subtree_check",
            "nohide",
            "crossmnt",
            "insecure_locks",
            "acl",
            "pnfs",
        ] {
            let o = ExportOptions::parse(bad).unwrap();
            let e = check_options(&o).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        for good in [
            "rw,sync,no_subtree_check",
            "ro,all_squash,anonuid=1",
            "insecure,sec=sys",
        ] {
            assert!(
                check_options(&ExportOptions::parse(good).unwrap()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn block_and_entries_round_trip() {
        let b = export_block(
            7,
            "/srv/p/a",
            &[
                rule("10.0.0.0/24", "rw"),
                rule("*.lab.test", "ro"),
                rule("@ng", "rw"),
            ],
        );
        assert!(b.contains("Export_Id = 7;"));
        assert!(b.contains("Clients = 10.0.0.0/24;"));
        assert!(b.contains("Clients = \"*.lab.test\";"));
        assert!(b.contains("Clients = \"@ng\";"));
        let text = format!(
            "{HEADER}{b}{}",
            export_block(8, "/srv/p/b", &[rule("*", "rw")])
        );
        let entries = Ganesha::entries_in(&text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "/srv/p/a");
        assert_eq!(entries[0].1, b);
        assert_eq!(entries[1].0, "/srv/p/b");
    }

    #[test]
    fn live_list_parsing() {
        let live = parse_live_exports("0 /\n7 /srv/p/a\nnoise\n12 /srv/p/b\n");
        assert_eq!(live.get(&7).map(String::as_str), Some("/srv/p/a"));
        assert_eq!(live.len(), 3);
    }
}
