//! A strict reader of the exports(5) lines nfsprov writes, from exports(5) itself: a line
//! is a path, then blank-separated `client(options)` words. Anything exportfs would read
//! differently — a quote, a backslash (continuation), `#` (comment), a tab or any other
//! control character, a word without its option list — is a failure, not something to
//! tolerate.

use nfsprov::backend::{HEADER, Rendered};
use nfsprov::plan::Export;
use nfsprov::spec::{ClientSpec, ExportOptions};

/// One exports line: the path and each client's text with its option text.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub path: String,
    pub clients: Vec<(String, String)>,
}

pub fn parse_line(l: &str) -> Result<Line, String> {
    if let Some(c) = l
        .chars()
        .find(|&c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '#'))
    {
        return Err(format!("{c:?} in {l:?}"));
    }
    let mut words = l.split(' ');
    let path = words.next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(format!("the line does not start with a path: {l:?}"));
    }
    let mut clients = Vec::new();
    for w in words {
        let (host, rest) = w
            .split_once('(')
            .ok_or_else(|| format!("{w:?} has no option list in {l:?}"))?;
        let opts = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("{w:?} does not end its option list in {l:?}"))?;
        if host.is_empty() || opts.contains(['(', ')']) {
            return Err(format!("{w:?} is not client(options) in {l:?}"));
        }
        clients.push((host.to_string(), opts.to_string()));
    }
    if clients.is_empty() {
        return Err(format!("no client in {l:?}"));
    }
    Ok(Line {
        path: path.to_string(),
        clients,
    })
}

/// The file is the header, then exactly one line per export, in order, each naming its own
/// path and rules, and `line_map` gives each line to its own volume.
pub fn check(r: &Rendered, exported: &[&Export]) {
    assert!(r.text.starts_with(HEADER), "{:?}", r.text);
    let header_lines = HEADER.lines().count();
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines.len(),
        header_lines + exported.len(),
        "one line per export:\n{}",
        r.text
    );
    assert!(r.text.ends_with('\n'));
    for (i, e) in exported.iter().enumerate() {
        let n = header_lines + i + 1;
        assert_eq!(
            super::lines_of(r, e.volume),
            [n],
            "line_map of {:?}",
            e.volume
        );
        let line = parse_line(lines[n - 1]).unwrap_or_else(|why| panic!("{why}\n{}", r.text));
        assert_eq!(line.path, e.path);
        assert_eq!(line.clients.len(), e.clients.len(), "{:?}", lines[n - 1]);
        for ((host, opts), rule) in line.clients.iter().zip(&e.clients) {
            assert_eq!(ClientSpec::parse(host).as_ref(), Ok(&rule.host), "{host:?}");
            assert_eq!(
                ExportOptions::parse(opts),
                Ok(rule.options.with_defaults()),
                "{opts:?}"
            );
        }
    }
}
