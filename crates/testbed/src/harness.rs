//! Harness for end-to-end tests and benchmarks: a real test bed (sshd + exportfs in mount
//! namespaces), the real `nfsprov` binary serving on a free loopback port, and an HTTP client.
//! Nothing is mocked. The binary is found by [`nfsprov_bin`]; this crate never links the product.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Testbed, TestbedGuard, TestbedServer};

/// The `nfsprov` binary to run: `$NFSPROV_BIN` when set, else the `nfsprov` that cargo built
/// beside the running executable (`target/<profile>/nfsprov` for a test in
/// `target/<profile>/deps/` or a tool in `target/<profile>/`).
pub fn nfsprov_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NFSPROV_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the path of the running executable");
        let dir = exe.parent().expect("the executable's directory");
        [dir.join("nfsprov"), dir.join("../nfsprov")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no nfsprov binary beside {}: build it (cargo build -p nfsprov) or set NFSPROV_BIN",
                    exe.display()
                )
            })
    })
}
pub const ADMIN: (&str, &str) = ("admin", "admin-pass-1");
pub const ALICE: (&str, &str) = ("alice", "alice-pass-1");
pub const BOB: (&str, &str) = ("bob", "bob-pass-01");

pub struct Env {
    pub tb: TestbedGuard,
    pub dir: tempfile::TempDir,
    pub serve: Option<Child>,
    pub port: u16,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An export policy that lets ordinary users give every option and client (world-wide write
/// access, `no_root_squash`, ...): what the harness sets on the root paths it registers.
pub const PERMISSIVE_POLICY: &str = r#"{"allowed_options": ["no_root_squash", "insecure", "anonuid=0", "anongid=0", "crossmnt", "nohide", "insecure_locks"], "world_writable": true}"#;

impl Env {
    /// `n` servers, each registered with root path 1..n = /srv/nfsprov/pool1 of `capacity_gb`
    /// and a permissive export policy (`PERMISSIVE_POLICY`); users admin, alice (quota
    /// `quota_gb`) and bob (quota `quota_gb`). Serving.
    pub async fn start(n: usize, capacity_gb: i64, quota_gb: i64) -> Env {
        Env::start_with(capacity_gb, quota_gb, move |dir| Testbed::up(dir, n)).await
    }

    /// `n` nfs-ganesha servers in network namespaces and `clients` client hosts.
    pub async fn start_ganesha(n: usize, clients: usize, capacity_gb: i64, quota_gb: i64) -> Env {
        Env::start_with(capacity_gb, quota_gb, move |dir| {
            Testbed::up_ganesha(dir, n, clients)
        })
        .await
    }

    async fn start_with(
        capacity_gb: i64,
        quota_gb: i64,
        up: impl FnOnce(&Path) -> anyhow::Result<Testbed> + Send + 'static,
    ) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("nfsprov-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let tb_dir = dir.path().join("testbed");
        let tb = tokio::task::spawn_blocking(move || up(&tb_dir))
            .await
            .unwrap()
            .expect("test bed starts");
        let mut env = Env {
            tb: TestbedGuard(tb),
            dir,
            serve: None,
            port: free_port(),
            http: reqwest::Client::new(),
        };
        for args in env.tb.register_args("", capacity_gb) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.cli_ok(&args);
        }
        // Tests of other things send every option and client as ordinary users: their root
        // paths allow it. tests/export_policy.rs sets the defaults back and tests them.
        for id in 1..=env.tb.servers.len() {
            env.cli_ok(&["rootpath", "policy", &id.to_string(), PERMISSIVE_POLICY]);
        }
        env.cli_stdin_ok(&["user", "add", ADMIN.0, "--admin"], ADMIN.1);
        for u in [ALICE, BOB] {
            env.cli_stdin_ok(
                &["user", "add", u.0, "--quota-gb", &quota_gb.to_string()],
                u.1,
            );
        }
        env.start_serve().await;
        env.wait_servers_reachable().await;
        env
    }

    /// Wait until every server had a successful reconcile pass.
    pub async fn wait_servers_reachable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, servers) = self
                .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
                .await;
            if servers
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["status"] == "reachable"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "servers not reachable: {servers}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(nfsprov_bin())
            .args(args)
            .env("NFSPROV_DATA_DIR", self.data_dir())
            .env("NFSPROV_LOG", "warn")
            .output()
            .expect("run nfsprov")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "nfsprov {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run the CLI with `input` and a newline on its standard input (passwords).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(nfsprov_bin())
            .args(args)
            .env("NFSPROV_DATA_DIR", self.data_dir())
            .env("NFSPROV_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nfsprov");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{input}").unwrap();
        drop(stdin);
        child.wait_with_output().expect("run nfsprov")
    }

    pub fn cli_stdin_ok(&self, args: &[&str], input: &str) -> String {
        let out = self.cli_stdin(args, input);
        assert!(
            out.status.success(),
            "nfsprov {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    pub async fn start_serve(&mut self) {
        self.start_serve_with(&[]).await
    }

    pub async fn start_serve_with(&mut self, envs: &[(&str, &str)]) {
        assert!(self.serve.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(nfsprov_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("NFSPROV_DATA_DIR", self.data_dir())
            .env("NFSPROV_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.serve = Some(cmd.spawn().expect("spawn nfsprov serve"));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/api/v1/health", self.base()))
                .send()
                .await
                && r.status().is_success()
            {
                // Make sure it is our process answering (not another test's on a reused port).
                let child = self.serve.as_mut().unwrap();
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "nfsprov serve exited: {}",
                    self.log()
                );
                return;
            }
            assert!(Instant::now() < deadline, "nfsprov serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restart `nfsprov serve` with extra environment, once its servers are reachable again.
    pub async fn restart_with(&mut self, envs: &[(&str, &str)]) {
        self.kill_serve();
        self.start_serve_with(envs).await;
        self.wait_servers_reachable().await;
    }

    /// SIGKILL the API/reconciler process, as a crash would.
    pub fn kill_serve(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub async fn req(
        &self,
        method: Method,
        user: Option<(&str, &str)>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{}", self.base(), path));
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("http request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Create a volume through the native API and wait until it settles.
    pub async fn create(
        &self,
        user: (&str, &str),
        root_path: i64,
        sub_path: &str,
        size: i64,
        clients: Value,
    ) -> (StatusCode, Value) {
        self.req(
            Method::POST,
            Some(user),
            "/api/v1/volumes?wait=true&timeout=30",
            Some(json!({"root_path_id": root_path, "sub_path": sub_path, "size_gb": size, "clients": clients})),
        )
        .await
    }

    /// Replace a volume's clients and wait until the change settles.
    pub async fn patch_clients(
        &self,
        user: (&str, &str),
        id: i64,
        clients: Value,
    ) -> (StatusCode, Value) {
        self.req(
            Method::PATCH,
            Some(user),
            &format!("/api/v1/volumes/{id}?wait=true"),
            Some(json!({ "clients": clients })),
        )
        .await
    }

    /// Delete a volume and wait until it is gone from its server.
    pub async fn delete_wait(&self, user: (&str, &str), id: i64) -> (StatusCode, Value) {
        self.req(
            Method::DELETE,
            Some(user),
            &format!("/api/v1/volumes/{id}?wait=true"),
            None,
        )
        .await
    }

    /// Create a 1 GB volume for alice on root path 1 and insist it is applied; its id.
    pub async fn create_available(&self, sub_path: &str, clients: Value) -> i64 {
        let (s, v) = self.create(ALICE, 1, sub_path, 1, clients).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["state"], "available", "{v}");
        v["id"].as_i64().unwrap()
    }

    /// Alice's create of 1 GB on root path 1, answered 202 without waiting for the server
    /// (which is down or about to fail): the volume's id.
    pub async fn create_accepted(&self, sub_path: &str, clients: Value) -> i64 {
        let (s, v) = self
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(json!({"root_path_id": 1, "sub_path": sub_path, "size_gb": 1, "clients": clients})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v["id"].as_i64().unwrap()
    }

    pub async fn volume(&self, id: i64) -> Value {
        let (s, v) = self
            .req(
                Method::GET,
                Some(ADMIN),
                &format!("/api/v1/volumes/{id}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Poll until `pred` holds for volume `id` (bounded).
    pub async fn wait_volume(
        &self,
        id: i64,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.volume(id).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "volume {id} never reached the expected state: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A user as the admin API shows it.
    pub async fn user_row(&self, name: &str) -> Value {
        let (_, users) = self
            .req(Method::GET, Some(ADMIN), "/api/v1/users", None)
            .await;
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no user {name}: {users}"))
    }

    /// Every volume, deleted ones included, as the admin sees them.
    pub async fn all_volumes(&self) -> Vec<Value> {
        let (_, all) = self
            .req(
                Method::GET,
                Some(ADMIN),
                "/api/v1/volumes?include_deleted=true",
                None,
            )
            .await;
        all.as_array().unwrap().clone()
    }

    pub fn server(&self, name: &str) -> &TestbedServer {
        self.tb.server(name).expect("server exists")
    }

    pub fn managed_file(&self, server: &str) -> String {
        std::fs::read_to_string(self.server(server).exports_d().join("nfsprov.exports"))
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_serve();
    }
}

/// etab lines for `path` (tab-separated path, then client(options)).
pub fn etab_entries(etab: &str, path: &str) -> Vec<String> {
    etab.lines()
        .filter(|l| l.split('\t').next() == Some(path))
        .map(|l| l.split('\t').nth(1).unwrap_or_default().to_string())
        .collect()
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().mode() & 0o7777
}
