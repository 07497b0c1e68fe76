//! The properties the fuzz targets check, one function per target. Each panics (which
//! libFuzzer reports as a crash, with the input saved) when nfsprov breaks a promise:
//!
//! - a parser accepts only text that is safe where it goes, and its canonical form parses
//!   back to the same value (`sub_path`, `client_spec`, `export_options`);
//! - hootie's create body parser refuses any bytes with a 400 naming a field, never a 500,
//!   and what it accepts survives a round trip through JSON and a form (`hootie_body`);
//! - the knfsd and ganesha renderers write, for any volumes the parsers accept, one line or
//!   block per volume that re-parses (with the small parsers below, written from exports(5)
//!   and ganesha's config grammar, not from nfsprov's renderer) to the volume's own path and
//!   rules, and nothing of one volume lands in another's line or block (`render`).

pub mod exports;
pub mod ganesha;

use axum::response::IntoResponse;
use nfsprov::api::HootieError;
use nfsprov::api::hootie::{CreateBody, parse_create_body};
use nfsprov::backend::{Backend, Ganesha, Knfsd, Rendered, render};
use nfsprov::error::Error;
use nfsprov::model::{
    ClientRule, DeletePolicy, Layout, RootPathId, ServerId, UserId, Volume, VolumeId, VolumeState,
};
use nfsprov::plan::Plan;
use nfsprov::spec::ganesha::held;
use nfsprov::spec::{
    self, ClientSpec, DirMode, ExportOption, ExportOptions, RootDir, SpecError, SubPath,
};

/// A refusal is a sentence a user can act on, printable as it is.
fn check_message(input: &str, e: &SpecError) {
    assert!(!e.0.is_empty(), "{input:?}: empty error message");
    assert!(
        !e.0.chars().any(char::is_control),
        "{input:?}: the error message carries a control character: {:?}",
        e.0
    );
}

fn path_chars_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

fn components_ok(body: &str) -> bool {
    body.split('/')
        .all(|c| !c.is_empty() && c.len() <= 64 && !c.starts_with('.') && !c.starts_with('-'))
}

/// `SubPath`, `RootDir` and `DirMode`: what is accepted is safe to join, quote-free, and its
/// canonical form is a fixed point.
pub fn check_paths(s: &str) {
    match SubPath::parse(s) {
        Ok(p) => {
            let t = p.as_str();
            assert!(
                path_chars_ok(t),
                "{s:?} -> {t:?}: a character outside the set"
            );
            assert!(!t.starts_with('/') && !t.ends_with('/'), "{s:?} -> {t:?}");
            assert!(
                t.len() <= 200 && t.split('/').count() <= 8,
                "{s:?} -> {t:?}"
            );
            assert!(components_ok(t), "{s:?} -> {t:?}: a bad component");
            assert!(s == t || s.strip_suffix('/') == Some(t), "{s:?} -> {t:?}");
            assert_eq!(
                SubPath::parse(t).as_ref(),
                Ok(&p),
                "{s:?}: not a fixed point"
            );
            assert!(p.overlaps(&p));
        }
        Err(e) => check_message(s, &e),
    }
    match RootDir::parse(s) {
        Ok(r) => {
            let t = r.as_str();
            assert!(
                path_chars_ok(t),
                "{s:?} -> {t:?}: a character outside the set"
            );
            let body = t.strip_prefix('/').expect("a root is absolute");
            assert!(!body.is_empty() && !body.ends_with('/'), "{s:?} -> {t:?}");
            assert!(components_ok(body), "{s:?} -> {t:?}: a bad component");
            assert_eq!(
                RootDir::parse(t).as_ref(),
                Ok(&r),
                "{s:?}: not a fixed point"
            );
            let sub = SubPath::parse("v").unwrap();
            assert_eq!(r.join(&sub), format!("{t}/v"));
        }
        Err(e) => check_message(s, &e),
    }
    match DirMode::parse(s) {
        Ok(m) => {
            assert!(m.bits() <= 0o7777, "{s:?} -> {:o}", m.bits());
            let t = m.as_octal_string();
            assert_eq!(
                DirMode::parse(&t),
                Ok(m),
                "{s:?} -> {t:?}: not a fixed point"
            );
        }
        Err(e) => check_message(s, &e),
    }
}

/// Characters of a client's canonical text: nothing that ends an exports(5) word or starts
/// an option list, a quote, a comment or a ganesha statement.
fn client_text_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'-' | b'_' | b':' | b'*' | b'?' | b'@' | b'/')
        })
}

/// `ClientSpec` and hootie's `allowed_hosts` list.
pub fn check_clients(s: &str) {
    match ClientSpec::parse(s) {
        Ok(c) => {
            let t = c.to_string();
            assert!(client_text_ok(&t), "{s:?} -> {t:?}: unsafe text");
            assert_eq!(
                ClientSpec::parse(&t).as_ref(),
                Ok(&c),
                "{s:?} -> {t:?}: not a fixed point"
            );
            // ganesha's view of it is total: a form or a reason.
            match held(&c) {
                Ok(_) => {}
                Err(why) => assert!(!why.is_empty()),
            }
        }
        Err(e) => check_message(s, &e),
    }
    match spec::parse_client_list(s) {
        Ok(list) => {
            assert!(!list.is_empty());
            for sep in [" ", ",", ", "] {
                let joined = list.iter().map(|c| c.to_string()).collect::<Vec<_>>();
                let again = spec::parse_client_list(&joined.join(sep));
                assert_eq!(again.as_ref(), Ok(&list), "{s:?}: joined with {sep:?}");
            }
        }
        Err(e) => check_message(s, &e),
    }
}

/// `ExportOptions` (comma-separated and as a list) and `ExportOption`.
pub fn check_options(s: &str) {
    match ExportOptions::parse(s) {
        Ok(o) => {
            let t = o.to_string();
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b':' | b',')),
                "{s:?} -> {t:?}: unsafe text"
            );
            assert_eq!(ExportOptions::parse(&t).as_ref(), Ok(&o), "{s:?} -> {t:?}");
            let items: Vec<String> = if t.is_empty() {
                Vec::new()
            } else {
                t.split(',').map(String::from).collect()
            };
            assert_eq!(ExportOptions::from_list(&items).as_ref(), Ok(&o), "{s:?}");
            let d = o.with_defaults();
            assert_eq!(d.with_defaults(), d, "{s:?}: defaults are not idempotent");
            assert!(
                o.iter().all(|x| d.contains(x)),
                "{s:?}: defaults dropped one"
            );
            assert_eq!(
                ExportOptions::parse(&d.to_string()).as_ref(),
                Ok(&d),
                "{s:?}"
            );
            for tok in d.etab_tokens() {
                assert!(
                    !tok.is_empty() && !tok.contains(','),
                    "{s:?}: token {tok:?}"
                );
            }
            // The ganesha mapping is total, and its values are plain tokens.
            let _ = spec::ganesha::check_options(&o);
            for (k, v) in nfsprov::backend::ganesha::mapping(&o) {
                assert!(
                    v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b' ')),
                    "{s:?}: {k} = {v:?}"
                );
            }
        }
        Err(e) => check_message(s, &e),
    }
    match ExportOption::parse(s) {
        Ok(o) => {
            let t = o.to_string();
            assert_eq!(ExportOption::parse(&t).as_ref(), Ok(&o), "{s:?} -> {t:?}");
            assert!(ExportOption::KEYWORDS.contains(&o.keyword()), "{s:?}");
        }
        Err(e) => check_message(s, &e),
    }
}

/// The fields hootie's create may name in a 400.
const HOOTIE_FIELDS: &[&str] = &[
    "detail",
    "non_field_errors",
    "root_path",
    "sub_path",
    "size_GB",
    "options",
    "allowed_hosts",
];

/// hootie's create body: the first byte picks the content type, the rest is the body.
pub fn check_hootie_body(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let ctype = match first % 3 {
        0 => "application/json",
        1 => "application/x-www-form-urlencoded",
        _ => "application/x-www-form-urlencoded; charset=utf-8",
    };
    match parse_create_body(ctype, body) {
        Ok(req) => {
            let json = hootie_json(&req);
            let again = parse_create_body("application/json", json.as_bytes());
            assert_eq!(again.as_ref().ok(), Some(&req), "{json}: {again:?}");
            let form = hootie_form(&req);
            let again = parse_create_body("application/x-www-form-urlencoded", form.as_bytes());
            assert_eq!(again.as_ref().ok(), Some(&req), "{form}: {again:?}");
        }
        Err(e) => {
            match &e {
                Error::Invalid { field, message } => {
                    assert!(HOOTIE_FIELDS.contains(&field.as_str()), "field {field:?}");
                    assert!(!message.is_empty(), "{field}: empty message");
                }
                other => panic!("not a field error: {other:?}"),
            }
            let status = HootieError(e).into_response().status();
            assert_eq!(status.as_u16(), 400);
        }
    }
}

fn hosts_text(req: &CreateBody) -> String {
    req.allowed_hosts
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn hootie_json(req: &CreateBody) -> String {
    serde_json::json!({
        "root_path": req.root_path,
        "sub_path": req.sub_path.as_str(),
        "size_GB": req.size_gb,
        "options": req.options.to_string(),
        "allowed_hosts": hosts_text(req),
    })
    .to_string()
}

fn hootie_form(req: &CreateBody) -> String {
    let options = req.options.to_string();
    let hosts = hosts_text(req);
    let pairs = [
        ("root_path", req.root_path.to_string()),
        ("sub_path", req.sub_path.to_string()),
        ("size_GB", req.size_gb.to_string()),
        ("options", options),
        ("allowed_hosts", hosts),
    ];
    serde_urlencoded::to_string(pairs).unwrap()
}

/// Volumes from fuzz input: volumes are separated by the byte 0xFE, a volume's fields by
/// 0xFF (neither occurs in UTF-8, so a field may hold any text, newlines and quotes too):
/// root path, sub path, then client and options in turns. A field the parsers refuse drops
/// its volume (or client), as the API would. At most 16 volumes of 8 clients.
pub fn volumes_from(data: &[u8]) -> Vec<Volume> {
    let mut out = Vec::new();
    for (i, raw) in data.split(|&b| b == 0xFE).take(16).enumerate() {
        let fields: Vec<&str> = raw
            .split(|&b| b == 0xFF)
            .map(|f| std::str::from_utf8(f).unwrap_or("\u{0}"))
            .collect();
        let (Some(root), Some(sub)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let (Ok(root), Ok(sub)) = (RootDir::parse(root), SubPath::parse(sub)) else {
            continue;
        };
        let clients: Vec<ClientRule> = fields[2..]
            .chunks(2)
            .take(8)
            .filter_map(|pair| {
                Some(ClientRule {
                    host: ClientSpec::parse(pair[0]).ok()?,
                    options: ExportOptions::parse(pair.get(1).copied().unwrap_or("")).ok()?,
                })
            })
            .collect();
        let id = i as i64 + 1;
        out.push(Volume {
            id: VolumeId(id),
            owner_id: UserId(1),
            owner: "fuzz".into(),
            root_path_id: RootPathId(1),
            root_path: root,
            delete_policy: DeletePolicy::Retain,
            layout: Layout::Directory,
            server_id: ServerId(1),
            nfs_address: "nfs1".into(),
            sub_path: sub,
            size_gb: 1,
            applied_clients: Some(clients.clone()),
            clients,
            mode: DirMode::default(),
            uid: 0,
            gid: 0,
            adopt_existing: false,
            state: VolumeState::Available,
            export_id: (id as u32).wrapping_mul(7919),
            generation: 1,
            failed_generation: None,
            last_error: None,
            created_at: Default::default(),
            updated_at: Default::default(),
        });
    }
    out
}

/// Both renderers on the same volumes.
pub fn check_render(data: &[u8]) {
    let volumes = volumes_from(data);
    let plan = Plan::build(&volumes);
    let exported: Vec<_> = plan
        .exports
        .iter()
        .filter(|e| !e.clients.is_empty())
        .collect();

    let r = render::<Knfsd>(&plan);
    exports::check(&r, &exported);
    check_entries::<Knfsd>(&r, &exported);

    let r = render::<Ganesha>(&plan);
    ganesha::check(&r, &exported);
    check_entries::<Ganesha>(&r, &exported);
}

/// The judge's own reading of the file (`Backend::entries_in`, used to spot hand edits) finds
/// each export's entry whole, in order, under its path.
fn check_entries<B: Backend>(r: &Rendered, exported: &[&nfsprov::plan::Export]) {
    let found = B::entries_in(&r.text);
    assert_eq!(
        found.len(),
        exported.len(),
        "{}: entries in\n{}",
        B::NAME,
        r.text
    );
    for ((path, text), (e, (id, entry))) in found.iter().zip(exported.iter().zip(&r.entries)) {
        assert_eq!(*id, e.volume);
        assert_eq!(path, &e.path, "{}: entry path", B::NAME);
        assert_eq!(text.trim_end(), entry.trim_end(), "{}: entry text", B::NAME);
    }
}

/// Every line of a rendered file belongs to at most one volume, and `line_map` says which.
fn lines_of(r: &Rendered, volume: VolumeId) -> Vec<usize> {
    let mut lines: Vec<usize> = r
        .line_map
        .iter()
        .filter(|&(_, v)| *v == volume)
        .map(|(&n, _)| n)
        .collect();
    lines.sort();
    lines
}
