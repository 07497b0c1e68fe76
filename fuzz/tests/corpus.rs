//! Replays every committed input under `corpus/<target>/` through its target's checks, without
//! libFuzzer or instrumentation: `cargo test --manifest-path fuzz/Cargo.toml` (stable).

use std::path::Path;

fn replay(target: &str, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // A failing check panics; the name of the input comes just before its message.
        eprintln!("{}", path.display());
        check(&data);
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

fn text(check: fn(&str)) -> impl Fn(&[u8]) {
    move |data| {
        if let Ok(s) = std::str::from_utf8(data) {
            check(s)
        }
    }
}

#[test]
fn sub_path() {
    replay("sub_path", text(nfsprov_fuzz::check_paths));
}

#[test]
fn client_spec() {
    replay("client_spec", text(nfsprov_fuzz::check_clients));
}

#[test]
fn export_options() {
    replay("export_options", text(nfsprov_fuzz::check_options));
}

#[test]
fn hootie_body() {
    replay("hootie_body", nfsprov_fuzz::check_hootie_body);
}

#[test]
fn render() {
    replay("render", nfsprov_fuzz::check_render);
}

#[test]
fn render_seeds_reach_the_renderers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/render");
    let data = std::fs::read(dir.join("seed-01")).unwrap();
    let volumes = nfsprov_fuzz::volumes_from(&data);
    let clients: Vec<usize> = volumes.iter().map(|v| v.clients.len()).collect();
    assert_eq!(clients, [2, 2, 2]);
}
