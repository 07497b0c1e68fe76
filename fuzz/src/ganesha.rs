//! A strict reader of the ganesha config nfsprov writes, from the grammar of ganesha's
//! config files (`config_parsing/conf_lex.l`, `conf_yacc.y`): blocks `NAME { ... }` holding
//! statements `Key = value[, value...];` and blocks; `"..."` strings; `#` comments. Anything
//! the real lexer would read another way — a quote or `#` inside a block, a backslash, a
//! character no unquoted token takes — is a failure here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nfsprov::backend::{HEADER, Rendered};
use nfsprov::plan::Export;
use nfsprov::spec::ganesha::{Held, held};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Eq,
    Semi,
    Comma,
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') {
            if n > HEADER.lines().count() {
                return Err(format!("a comment outside the header, line {n}: {line:?}"));
            }
            continue;
        }
        let mut chars = line.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let tok = match c {
                ' ' => continue,
                '{' => Tok::Open,
                '}' => Tok::Close,
                '=' => Tok::Eq,
                ';' => Tok::Semi,
                ',' => Tok::Comma,
                '"' => {
                    let rest = &line[at + 1..];
                    let end = rest
                        .find('"')
                        .ok_or_else(|| format!("an open string, line {n}: {line:?}"))?;
                    let s = &rest[..end];
                    if s.contains('\\') {
                        return Err(format!("a backslash in a string, line {n}: {line:?}"));
                    }
                    for _ in 0..=s.chars().count() {
                        chars.next();
                    }
                    Tok::Str(s.to_string())
                }
                c if word_char(c) => {
                    let mut w = String::from(c);
                    while let Some(&(_, d)) = chars.peek() {
                        if !word_char(d) {
                            break;
                        }
                        w.push(d);
                        chars.next();
                    }
                    Tok::Word(w)
                }
                c => return Err(format!("{c:?} outside a string, line {n}: {line:?}")),
            };
            out.push((tok, n));
        }
    }
    Ok(out)
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '*' | '?' | '@' | '/')
}

/// A block with its statements (values as written, strings without quotes), its inner
/// blocks and the lines it spans.
#[derive(Debug, Default)]
pub struct Block {
    pub name: String,
    pub stmts: Vec<(String, Vec<String>)>,
    pub blocks: Vec<Block>,
    pub first: usize,
    pub last: usize,
}

impl Block {
    /// The values of the one statement `key`; a key given twice is a failure.
    fn get(&self, key: &str) -> Option<&Vec<String>> {
        let mut found = self.stmts.iter().filter(|(k, _)| k == key);
        let first = found.next().map(|(_, v)| v);
        assert!(found.next().is_none(), "{key} twice in {}", self.name);
        first
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Result<(Tok, usize), String> {
        let t = self
            .toks
            .get(self.at)
            .cloned()
            .ok_or("the file ends early")?;
        self.at += 1;
        Ok(t)
    }

    /// After `NAME {`: statements and blocks up to the matching `}`.
    fn block(&mut self, name: String, first: usize) -> Result<Block, String> {
        let mut b = Block {
            name,
            first,
            ..Block::default()
        };
        loop {
            let (t, n) = self.next()?;
            let key = match t {
                Tok::Close => {
                    b.last = n;
                    return Ok(b);
                }
                Tok::Word(w) => w,
                other => return Err(format!("{other:?} where a key or block is, line {n}")),
            };
            match self.next()? {
                (Tok::Open, _) => b.blocks.push(self.block(key, n)?),
                (Tok::Eq, _) => {
                    let mut values = Vec::new();
                    loop {
                        match self.next()? {
                            (Tok::Word(v) | Tok::Str(v), _) => values.push(v),
                            (t, n) => return Err(format!("{t:?} where a value is, line {n}")),
                        }
                        match self.next()? {
                            (Tok::Comma, _) => {}
                            (Tok::Semi, _) => break,
                            (t, n) => return Err(format!("{t:?} after a value, line {n}")),
                        }
                    }
                    b.stmts.push((key, values));
                }
                (t, n) => return Err(format!("{t:?} after {key}, line {n}")),
            }
        }
    }
}

/// The top-level blocks of a config file.
pub fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut p = Parser {
        toks: lex(text)?,
        at: 0,
    };
    let mut blocks = Vec::new();
    while p.at < p.toks.len() {
        match (p.next()?, p.next()?) {
            ((Tok::Word(name), n), (Tok::Open, _)) => blocks.push(p.block(name, n)?),
            ((t, n), _) => return Err(format!("{t:?} at the top level, line {n}")),
        }
    }
    Ok(blocks)
}

/// How ganesha reads a `Clients` token (its lexer's token kinds; a network as its address
/// with the host bits cleared). Bare `0.0.0.0` is its "any client".
fn held_token(t: &str) -> Held {
    if t == "*" || t == "0.0.0.0" {
        return Held::Anyone;
    }
    if let Some(n) = t.strip_prefix('@') {
        return Held::Netgroup(n.to_string());
    }
    if t.contains(['*', '?']) {
        return Held::Wildcard(t.to_string());
    }
    if let Ok(a) = t.parse::<IpAddr>() {
        return Held::Net(a, if a.is_ipv4() { 32 } else { 128 });
    }
    if let Some((a, p)) = t.split_once('/')
        && let (Ok(a), Ok(p)) = (a.parse::<IpAddr>(), p.parse::<u8>())
    {
        let net = match a {
            IpAddr::V4(a) if (1..=32).contains(&p) => {
                IpAddr::V4((u32::from(a) & (u32::MAX << (32 - u32::from(p)))).into())
            }
            IpAddr::V6(a) if (1..=128).contains(&p) => {
                IpAddr::V6((u128::from(a) & (u128::MAX << (128 - u32::from(p)))).into())
            }
            _ => panic!("{t:?}: a prefix ganesha has no token for"),
        };
        return Held::Net(net, p);
    }
    Held::Host(t.to_string())
}

/// One `EXPORT` block per export, in order, spanning exactly the lines `line_map` gives its
/// volume; its id and path; one `CLIENT` block per rule, holding the client ganesha would
/// read as the rule's and the settings of the rule's options.
pub fn check(r: &Rendered, exported: &[&Export]) {
    assert!(r.text.starts_with(HEADER), "{:?}", r.text);
    let blocks = parse(&r.text).unwrap_or_else(|why| panic!("{why}\n{}", r.text));
    assert_eq!(
        blocks.len(),
        exported.len(),
        "one block per export:\n{}",
        r.text
    );
    let total = r.text.lines().count();
    let mut covered = HEADER.lines().count();
    for (b, e) in blocks.iter().zip(exported) {
        assert_eq!(b.name, "EXPORT");
        let span: Vec<usize> = (b.first..=b.last).collect();
        assert_eq!(
            super::lines_of(r, e.volume),
            span,
            "lines of {:?}",
            e.volume
        );
        assert_eq!(
            b.first,
            covered + 1,
            "a gap or overlap before {:?}",
            e.volume
        );
        covered = b.last;
        let one = |k: &str| -> String {
            match b.get(k).map(Vec::as_slice) {
                Some([v]) => v.clone(),
                other => panic!("{k} of {:?}: {other:?}\n{}", e.volume, r.text),
            }
        };
        assert_eq!(one("Export_Id"), e.export_id.to_string());
        assert_eq!(one("Path"), e.path);
        assert_eq!(one("Pseudo"), e.path);
        assert_eq!(one("Access_Type"), "None");
        let clients: Vec<&Block> = b.blocks.iter().filter(|c| c.name == "CLIENT").collect();
        assert_eq!(
            clients.len(),
            e.clients.len(),
            "CLIENT blocks of {:?}",
            e.volume
        );
        for (c, rule) in clients.iter().zip(&e.clients) {
            let written = match c.get("Clients").map(Vec::as_slice) {
                Some([v]) => v.clone(),
                other => panic!("Clients of {:?}: {other:?}", e.volume),
            };
            match held(&rule.host) {
                Ok(want) => assert_eq!(held_token(&written), want, "{} as {written:?}", rule.host),
                // Refused on create; a row from before that check is written as given.
                Err(_) => assert_eq!(written, rule.host.to_string()),
            }
            let settings: BTreeMap<String, String> = c
                .stmts
                .iter()
                .filter(|(k, _)| k != "Clients")
                .map(|(k, v)| (k.clone(), v.join(", ")))
                .collect();
            assert_eq!(
                settings.len() + 1,
                c.stmts.len(),
                "a setting twice: {:?}",
                c.stmts
            );
            let want: BTreeMap<String, String> = nfsprov::backend::ganesha::mapping(&rule.options)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(settings, want, "settings of {}", rule.host);
        }
    }
    assert_eq!(covered, total, "lines after the last block:\n{}", r.text);
}
