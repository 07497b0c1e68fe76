//! A TCP proxy on loopback that a test can pause or cut: a network partition between one
//! client (an nfsprov node) and its upstream (PostgreSQL), without touching the others.
//!
//! The client is given `127.0.0.1:<`[`TcpProxy::port`]`>` instead of the upstream's address.
//! [`TcpProxy::pause`] stops every byte in both directions, on open connections and new ones
//! (which are accepted but not forwarded): the client sees its database hang, as when a network
//! drops packets. [`TcpProxy::resume`] forwards again, held bytes included, as TCP delivers
//! them after a short partition. [`TcpProxy::cut`] closes every open connection (new ones are
//! still forwarded unless paused), as a firewall or NAT forgetting them would.
//!
//! While the upstream is down, a new connection is accepted and then closed: the client sees
//! its connection end, not a refusal.
//!
//! It runs on its own thread with its own tokio runtime, so it keeps forwarding while the test
//! blocks (a CLI command waiting on the database through it) and whatever runtime the test uses.
//! Dropping it stops it and closes every connection.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    paused: bool,
    /// Raised by each cut: a connection accepted under another value is closed.
    cut_generation: u64,
}

pub struct TcpProxy {
    pub port: u16,
    ip: Ipv4Addr,
    upstream: SocketAddr,
    state: watch::Sender<State>,
    active: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Listen on a free `127.0.0.1` port and forward each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<TcpProxy> {
        Self::start_on(Ipv4Addr::LOCALHOST, upstream)
    }

    /// Listen on a free port of `ip` (a loopback address: `127.0.0.2` is a name a server's
    /// certificate for `127.0.0.1` does not list) and forward each connection to `upstream`.
    pub fn start_on(ip: Ipv4Addr, upstream: SocketAddr) -> Result<TcpProxy> {
        anyhow::ensure!(
            ip.is_loopback(),
            "the proxy listens on loopback only, not {ip}"
        );
        let listener = TcpListener::bind((ip, 0)).context("binding the proxy's port")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (state, state_rx) = watch::channel(State {
            paused: false,
            cut_generation: 0,
        });
        let active = Arc::new(AtomicUsize::new(0));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the proxy's runtime")?;
        let counter = active.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                runtime.block_on(accept_loop(
                    listener,
                    upstream,
                    state_rx,
                    counter,
                    shutdown_rx,
                ))
            })
            .context("starting the proxy's thread")?;
        Ok(TcpProxy {
            port,
            ip,
            upstream,
            state,
            active,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Hold every byte, both ways, until [`TcpProxy::resume`].
    pub fn pause(&self) {
        self.state.send_modify(|s| s.paused = true);
    }

    /// Forward again, what was held first.
    pub fn resume(&self) {
        self.state.send_modify(|s| s.paused = false);
    }

    /// Close every open connection (bytes held by a pause are dropped).
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cut_generation += 1);
    }

    /// Connections open to the upstream now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Receiver<State>,
    active: Arc<AtomicUsize>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // Dropped at shutdown: every connection's task is aborted, its sockets closed.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(connection(client, upstream, state.clone(), active.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts a connection open to the upstream for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    state: watch::Receiver<State>,
    active: Arc<AtomicUsize>,
) {
    let generation = state.borrow().cut_generation;
    let mut cut_watch = state.clone();
    let forward = async {
        if !wait_open(&mut state.clone(), generation).await {
            return;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        active.fetch_add(1, Ordering::SeqCst);
        let _open = Open(active.clone());
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        tokio::join!(
            pump(client_r, server_w, state.clone(), generation),
            pump(server_r, client_w, state.clone(), generation),
        );
    };
    tokio::select! {
        _ = forward => {}
        _ = cut(&mut cut_watch, generation) => {}
    }
}

/// Copy `from` to `to` until end of stream, holding bytes while paused.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !wait_open(&mut state, generation).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Wait until not paused: true, or false when the connection was cut meanwhile.
async fn wait_open(state: &mut watch::Receiver<State>, generation: u64) -> bool {
    loop {
        let s = *state.borrow_and_update();
        if s.cut_generation != generation {
            return false;
        }
        if !s.paused {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

/// Returns when connections of `generation` are cut (or the proxy is gone).
async fn cut(state: &mut watch::Receiver<State>, generation: u64) {
    loop {
        if state.borrow_and_update().cut_generation != generation {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(all(test, feature = "e2e"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// A line echo server on loopback (a real upstream for the proxy's own test).
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn roundtrip(s: &mut std::net::TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn it_forwards_holds_while_paused_and_cuts() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        let mut a = std::net::TcpStream::connect(proxy.addr()).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(roundtrip(&mut a, b"hello").unwrap(), b"hello");
        assert_eq!(proxy.active(), 1);

        // Paused: nothing comes back, neither on the open connection nor on a new one ...
        proxy.pause();
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = roundtrip(&mut a, b"held").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        let mut b = std::net::TcpStream::connect(proxy.addr()).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(roundtrip(&mut b, b"new").is_err());
        assert_eq!(
            proxy.active(),
            1,
            "a new connection reached the upstream while paused"
        );

        // ... until resumed: the held bytes arrive, then traffic flows again.
        proxy.resume();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut held = [0u8; 4];
        a.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"held");
        let mut new = [0u8; 3];
        b.read_exact(&mut new).unwrap();
        assert_eq!(&new, b"new");
        assert_eq!(roundtrip(&mut a, b"again").unwrap(), b"again");
        wait_until("two connections upstream", || proxy.active() == 2);

        // Cut: both connections end; a new one works.
        proxy.cut();
        for s in [&mut a, &mut b] {
            let mut buf = [0u8; 8];
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {}
                Ok(n) => panic!("read {n} bytes from a cut connection"),
            }
        }
        wait_until("no connection upstream", || proxy.active() == 0);
        let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(roundtrip(&mut c, b"after cut").unwrap(), b"after cut");

        // Dropped: its open connections end. (Not judged by connecting to its old port: once
        // freed, another test's listener may get that port.)
        drop(proxy);
        let mut buf = [0u8; 8];
        match c.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes after the proxy was dropped"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the connection stayed open after the proxy was dropped: {e}"
            ),
        }
    }

    /// Whether a session runs `sql` (signed in, past the connection's start).
    fn running(pg: &crate::postgres::Postgres, sql: &str) -> bool {
        let sql = sql.replace('\'', "''");
        pg.query(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}' AND state = 'active'"
        ))
        .unwrap()
        .trim()
            == "1"
    }

    #[test]
    fn psql_through_the_proxy_hangs_while_paused_and_fails_when_cut() {
        use crate::postgres::{Postgres, bin_dir};
        let pg = Postgres::start().unwrap();
        let proxy = TcpProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port))).unwrap();
        let url = pg
            .url()
            .replace(&pg.port.to_string(), &proxy.port.to_string());
        let psql = |sql: &str| {
            std::process::Command::new(bin_dir().unwrap().join("psql"))
                .args(["-At", "-d", &url, "-c", sql])
                .env("PGCONNECT_TIMEOUT", "3")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let out = psql("SELECT 41 + 1").wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

        // A session open through the proxy, then the partition: its query does not finish.
        wait_until("the first session closed", || proxy.active() == 0);
        let mut long = psql("SELECT pg_sleep(1), 'through'");
        wait_until("the query runs", || {
            running(&pg, "SELECT pg_sleep(1), 'through'")
        });
        proxy.pause();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert!(
                long.try_wait().unwrap().is_none(),
                "psql finished across a partition"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // A new client cannot even sign in (connect_timeout 3 s).
        let refused = psql("SELECT 1").wait_with_output().unwrap();
        assert!(!refused.status.success());
        // Healed: the held answer arrives.
        proxy.resume();
        let out = long.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("through"));

        // Cut mid-query: the client sees its connection lost; the server stays up.
        wait_until("the earlier sessions closed", || proxy.active() == 0);
        let cut_one = psql("SELECT pg_sleep(30)");
        wait_until("the query runs", || running(&pg, "SELECT pg_sleep(30)"));
        proxy.cut();
        let out = cut_one.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("closed") || err.contains("lost"), "{err}");
        let out = psql("SELECT 'again'").wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "again");
    }
}
