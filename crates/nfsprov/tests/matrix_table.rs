//! Fast tier: the backend matrix (`tests/matrix/rows.rs`, sent to real servers by
//! `tests/matrix.rs`) has a row for every client form and every export option nfsprov accepts.
//! A form, option or `sec=` flavour added to `nfsprov::spec` without a row fails here (a new
//! `ClientForm` or `ExportOption` variant already fails to compile the matches below).

#[path = "matrix/rows.rs"]
mod rows;

use std::collections::BTreeSet;

use nfsprov::spec::{ClientForm, ClientSpec, ExportOption, ExportOptions, SecFlavor};
use rows::{CLIENT_ROWS, Ganesha, HOOTIE_ALLOWED_HOSTS, Held, OPTION_ROWS};

/// The knfsd-side stand-ins for `{net}` and `{net6}` (see rows.rs).
fn concrete(s: &str) -> String {
    s.replace("{NET6}", "FD00:1:2")
        .replace("{net6}", "fd00:1:2")
        .replace("{net}", "10.1.2")
}

/// Which `ClientForm` a client is; no wildcard arm, so a new form does not compile until it is
/// named here, and then fails `every_client_form_has_a_row` until a row has it.
fn form_name(c: &ClientSpec) -> &'static str {
    match c.form() {
        ClientForm::Anyone => "anyone",
        ClientForm::Host(_) => "host",
        ClientForm::Wildcard(_) => "wildcard",
        ClientForm::Ipv4(_) => "ipv4",
        ClientForm::Ipv4Net(..) => "ipv4-net",
        ClientForm::Ipv6(_) => "ipv6",
        ClientForm::Ipv6Net(..) => "ipv6-net",
        ClientForm::Netgroup(_) => "netgroup",
    }
}

const FORMS: &[&str] = &[
    "anyone", "host", "wildcard", "ipv4", "ipv4-net", "ipv6", "ipv6-net", "netgroup",
];

/// The cases issue 10 lists, each by the `form` label of its row.
const REQUIRED_CASES: &[&str] = &[
    "anyone",
    "host",
    "wildcard *",
    "wildcard ?",
    "ipv4",
    "ipv4-net /0",
    "ipv4-net /8",
    "ipv4-net /24",
    "ipv4-net /32",
    "ipv4-net netmask",
    "ipv4-net host bits set",
    "ipv6",
    "ipv6 ipv4-mapped",
    "ipv6-net /128",
    "ipv6-net ::/0",
    "netgroup",
];

#[test]
fn every_client_form_has_a_row() {
    let mut seen = BTreeSet::new();
    for row in CLIENT_ROWS {
        let host = concrete(row.host);
        let c = ClientSpec::parse(&host).unwrap_or_else(|e| panic!("row {}: {e}", row.form));
        let form = form_name(&c);
        assert!(
            row.form.starts_with(form),
            "row {:?}: {host} is a {form}",
            row.form
        );
        seen.insert(form);
        if let Held::Entries(e) = row.ganesha {
            assert!(!e.is_empty(), "row {}: no ganesha entries", row.form);
        }
    }
    for form in FORMS {
        assert!(seen.contains(form), "no matrix row for client form {form}");
    }
    for case in REQUIRED_CASES {
        assert!(
            CLIENT_ROWS.iter().any(|r| r.form == *case),
            "no matrix row for {case}"
        );
    }
    let labels: BTreeSet<_> = CLIENT_ROWS.iter().map(|r| r.form).collect();
    assert_eq!(labels.len(), CLIENT_ROWS.len(), "row labels are unique");
    let hootie = nfsprov::spec::parse_client_list(&concrete(HOOTIE_ALLOWED_HOSTS)).unwrap();
    assert!(hootie.len() > 1, "hootie's row lists several clients");
}

#[test]
fn every_option_keyword_and_flavour_has_a_row() {
    let parsed: Vec<ExportOptions> = OPTION_ROWS
        .iter()
        .map(|r| {
            ExportOptions::parse(r.options).unwrap_or_else(|e| panic!("row {:?}: {e}", r.options))
        })
        .collect();
    for kw in ExportOption::KEYWORDS {
        assert!(
            parsed.iter().flatten().any(|o| o.keyword() == kw),
            "no matrix row with option {kw}"
        );
    }
    // Every flavour alone, and several together.
    for f in SecFlavor::ALL {
        assert!(
            parsed.iter().flatten().any(|o| matches!(o,
                ExportOption::Sec(s) if s.flavors() == [f])),
            "no matrix row with sec={f} alone"
        );
    }
    assert!(
        parsed.iter().flatten().any(|o| matches!(o,
            ExportOption::Sec(s) if s.flavors().len() == SecFlavor::ALL.len())),
        "no matrix row with every sec= flavour at once"
    );
    // anonuid/anongid at the edges: 0, 2^31 - 1, 2^31 and the largest id.
    for id in [0, 2_147_483_647, 2_147_483_648, 4_294_967_294] {
        assert!(
            parsed
                .iter()
                .flatten()
                .any(|o| *o == ExportOption::AnonUid(id))
                || parsed
                    .iter()
                    .flatten()
                    .any(|o| *o == ExportOption::AnonGid(id)),
            "no matrix row with anonuid or anongid {id}"
        );
    }
    for alias in ["auth_nlm", "no_auth_nlm"] {
        assert!(
            OPTION_ROWS.iter().any(|r| r.options == alias),
            "no matrix row for the alias {alias}"
        );
    }
    assert!(
        parsed.iter().any(ExportOptions::is_empty),
        "no matrix row for the empty set"
    );
    // Each option that ganesha refuses has a row of its own, so the 400 names that one.
    for (row, opts) in OPTION_ROWS.iter().zip(&parsed) {
        if let Ganesha::Refused(what) = row.ganesha {
            assert!(
                opts.iter().any(|o| what == format!("'{}'", o.keyword())),
                "row {:?}: refusal {what} names none of its options",
                row.options
            );
        }
    }
    let distinct: BTreeSet<_> = OPTION_ROWS.iter().map(|r| r.options).collect();
    assert_eq!(distinct.len(), OPTION_ROWS.len(), "option rows are unique");
}
