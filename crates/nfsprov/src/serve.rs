//! `nfsprov serve`: open the database, start a reconciler per server, serve the API.
//!
//! The HTTP front door is hyper's HTTP/1 server with its limits set (see `HttpLimits`): a
//! client has `header_timeout` to send each request's headers (on a new connection, and again
//! between requests on a kept-alive one; hyper's header read timeout covers both), headers are
//! bounded in count and size, and connections are capped in all and per client address. The
//! body, request and authentication limits are tower layers in `api`.
//!
//! Each request's `ConnectInfo` is its client's address: the TCP peer, or, when the peer is a
//! trusted proxy (`NFSPROV_TRUSTED_PROXIES`), the client its `X-Forwarded-For` names
//! (`forwarded`). The connection caps are taken before any header is read: they count peers.
//!
//! With a certificate and key (`TlsSettings`) every connection is TLS (rustls, TLS 1.2 and
//! 1.3), its handshake done in the connection's own task within `header_timeout`, after the
//! connection caps, so a slow handshake holds neither the accept loop nor more than its slot.
//! Without them the API speaks plain HTTP, and `serve` refuses to start on an address that is
//! not loopback unless plain HTTP is allowed explicitly.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt as _;

use crate::api::{AppState, router};
use crate::auth::Source;
use crate::datastore::Datastore;
use crate::reconcile::Hub;
use crate::settings::{AuthLimits, ServeSettings, TlsSettings, Tuning};

/// The database file inside a data directory.
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("nfsprov.db")
}

/// Open the database in `data_dir`, creating both if needed. The directory holds password
/// hashes and SSH state: it is made (or tightened to) 0700 and the database file 0600 before
/// SQLite opens it, which gives its `-wal` and `-shm` files the same mode.
pub async fn open(data_dir: &Path) -> anyhow::Result<Datastore> {
    open_db(data_dir, None).await
}

/// Open the database `database` names (`postgres://…`: several nodes share it), or without
/// one the SQLite file in `data_dir` (see `open`). `data_dir` is made private either way: it
/// holds the SSH state.
pub async fn open_db(data_dir: &Path, database: Option<&str>) -> anyhow::Result<Datastore> {
    private_dir(data_dir)?;
    if let Some(url) = database {
        return Datastore::open_url(url).await;
    }
    let db = db_path(data_dir);
    private_file(&db)?;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            private_file(&p)?;
        }
    }
    Datastore::open(&db).await
}

/// Create `dir` (and its parents) if missing, and make it 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making data directory {} private (0700)", dir.display()))
}

/// Create `file` empty if missing, and make it 0600.
fn private_file(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", file.display()))
}

pub use crate::settings::HttpLimits;

/// File descriptors kept for the database, SSH sessions and logs beyond the connections.
const RESERVED_FDS: usize = 256;

/// Raise the soft limit on open files to the hard limit (a service manager's default soft limit
/// is often 1024); the number of files we may open.
fn raise_nofile_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else {
                tracing::warn!(
                    "could not raise the open-file limit from {} to {}: {}",
                    lim.rlim_cur,
                    lim.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The API over the database in `data_dir`, behind the same front door `serve` listens with,
/// and the hub of its reconcilers. No reconciler runs yet: `serve` starts one per server, and
/// a request that changes a server's volumes starts its own. The in-process API tests
/// (`tests/api.rs`) drive this router directly.
pub async fn app(
    data_dir: &Path,
    limits: &HttpLimits,
    auth_limits: AuthLimits,
    tuning: Tuning,
    directory: Option<Arc<crate::ldap::Directory>>,
) -> anyhow::Result<(axum::Router, Hub)> {
    let db = open(data_dir).await?;
    app_on(db, data_dir, limits, auth_limits, tuning, directory)
}

/// `app` on a database already open (`serve` opens the one `--database` names).
pub fn app_on(
    db: Datastore,
    data_dir: &Path,
    limits: &HttpLimits,
    auth_limits: AuthLimits,
    tuning: Tuning,
    directory: Option<Arc<crate::ldap::Directory>>,
) -> anyhow::Result<(axum::Router, Hub)> {
    let state_dir = data_dir.join("ssh");
    private_dir(&state_dir)?;
    let hub = Hub::new(db, state_dir, tuning);
    let auth = crate::auth::Authenticator::new(auth_limits).with_directory(directory);
    let app = router(AppState::with_authenticator(hub.clone(), auth), limits);
    Ok((app, hub))
}

/// Serve until Ctrl-C or SIGTERM, then stop the reconcilers. `settings` were checked when
/// they were read (see `settings`).
pub async fn serve(
    data_dir: &Path,
    database: Option<&str>,
    listen: SocketAddr,
    settings: ServeSettings,
) -> anyhow::Result<()> {
    let ServeSettings {
        tuning,
        http: mut limits,
        auth: auth_limits,
        requests,
        ldap,
        tls,
    } = settings;
    // Before anything is created or opened: a refusal leaves no trace.
    let acceptor = tls_acceptor(&tls, listen)?;
    // Read and checked before anything starts: a mistake stops the service here.
    let directory = crate::ldap::Directory::from_settings(&ldap)?;
    if !crate::spec::install_limits(requests.into()) {
        anyhow::bail!("request limits were in force before they were read");
    }
    let nofile = raise_nofile_limit();
    let fd_room = nofile.saturating_sub(RESERVED_FDS).max(16);
    if limits.max_connections > fd_room {
        tracing::warn!(
            "NFSPROV_MAX_CONNECTIONS={} is more than the open-file limit {nofile} allows; using {fd_room}",
            limits.max_connections
        );
        limits.max_connections = fd_room;
    }
    let db = open_db(data_dir, database).await?;
    let (app, hub) = app_on(db, data_dir, &limits, auth_limits, tuning, directory)?;
    // Other nodes' changes wake this node's reconcilers and waiters (PostgreSQL).
    hub.follow_changes();
    // Every server is reconciled at start (crash recovery, drift repair); servers added later
    // through the CLI are picked up by this periodic scan, through the API at once.
    hub.ensure_all().await?;
    let scan = hub.clone();
    let scan = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Err(e) = scan.ensure_all().await {
                tracing::warn!("scanning for new servers: {e:#}");
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    tracing::info!("nfsprov listening on {scheme}://{}", listener.local_addr()?);
    serve_http(listener, app, &limits, acceptor, shutdown_signal()).await;
    scan.abort();
    hub.shutdown().await;
    Ok(())
}

/// The TLS acceptor `tls` asks for, or `None` for plain HTTP, which is refused on an address
/// other than loopback unless `tls.allow_plain_http`.
pub fn tls_acceptor(
    tls: &TlsSettings,
    listen: SocketAddr,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) else {
        if !listen.ip().is_loopback() && !tls.allow_plain_http {
            anyhow::bail!(
                "refusing to serve plain HTTP on {listen}, which is not a loopback address: \
                 passwords and tokens would cross the network in clear text. Give a certificate \
                 and its key (NFSPROV_TLS_CERT and NFSPROV_TLS_KEY, or --tls-cert and --tls-key), \
                 listen on a loopback address such as 127.0.0.1:8080, or, behind a proxy that \
                 terminates TLS, set NFSPROV_ALLOW_PLAIN_HTTP=true (or --allow-plain-http)"
            );
        }
        return Ok(None);
    };
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "reading the TLS certificate {} (NFSPROV_TLS_CERT)",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} (NFSPROV_TLS_CERT) holds no PEM CERTIFICATE block",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "reading the TLS private key {} (NFSPROV_TLS_KEY)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS key (NFSPROV_TLS_KEY) does not fit the certificate (NFSPROV_TLS_CERT)")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Connections open per client address (an IPv6 client: per /64, as `auth::Source` groups).
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<Source, usize>>>);

/// One connection's place in `PerIp`; given back when dropped.
struct IpSlot(PerIp, Source);

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = Source::of(ip);
        let mut map = self.0.lock().expect("per-ip lock");
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().expect("per-ip lock");
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// The address a request's handlers see as its client (`ConnectInfo`: the rate limits, the
/// sign-in limits, the audit's `source`): the TCP peer, or, when the peer is a trusted proxy,
/// the client its `X-Forwarded-For` names (`forwarded`), with port 0 (its port is not known).
fn client_addr(
    proxies: &crate::settings::TrustedProxies,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> SocketAddr {
    let client = proxies.client_of(peer.ip(), headers);
    if client == peer.ip() {
        peer
    } else {
        SocketAddr::new(client, 0)
    }
}

/// Accept connections and serve `app` on each with hyper's HTTP/1 server, within `limits`,
/// until `shutdown` completes; then let open requests finish (up to 10 s). The connection
/// caps count TCP peers: a proxy's connections count as its own, whoever it forwards for.
/// Public for the fast tier's tests, which serve `app` on 127.0.0.1 with it.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size((limits.max_header_bytes * 2).max(8192));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_ip = PerIp::default();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the connection gate is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors or the like: the client is gone, we are not.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!("refusing a connection from {peer}: too many open from it");
            drop(stream);
            continue;
        };
        let (app, proxies) = (app.clone(), limits.trusted_proxies.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            // Per request: a proxy's kept-alive connection carries many clients' requests.
            let client = client_addr(&proxies, peer, req.headers());
            req.extensions_mut().insert(ConnectInfo(client));
            app.clone().oneshot(req)
        });
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), tls.clone());
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer}: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer}: timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(permit);
            drop(ip_slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("some requests did not finish within 10 s of shutdown");
        }
    }
}

/// Ctrl-C or SIGTERM (what service managers send). Stopping at any point is safe: the next
/// start reconciles every server from the database.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_unless_allowed() {
        let plain = TlsSettings::default();
        let allowed = TlsSettings {
            allow_plain_http: true,
            ..TlsSettings::default()
        };
        for loopback in ["127.0.0.1:8080", "127.9.9.9:1", "[::1]:8080"] {
            let a = loopback.parse().unwrap();
            assert!(tls_acceptor(&plain, a).unwrap().is_none(), "{loopback}");
        }
        for open in [
            "0.0.0.0:8080",
            "192.0.2.7:8080",
            "[::]:8080",
            "[2001:db8::1]:80",
        ] {
            let a = open.parse().unwrap();
            let Err(e) = tls_acceptor(&plain, a).map(|_| ()) else {
                panic!("{open}: plain HTTP was not refused");
            };
            let e = e.to_string();
            assert!(e.contains(open), "{open}: {e}");
            assert!(tls_acceptor(&allowed, a).unwrap().is_none(), "{open}");
        }
    }
}
