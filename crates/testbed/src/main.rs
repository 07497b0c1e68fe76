//! `nfsprov-testbed`: simulated NFS servers on this machine (sshd in mount namespaces, or
//! nfs-ganesha in network namespaces), for the demo, the tests and the benchmarks. It installs
//! what it needs (apt-get) and never links nfsprov: `register` runs the `nfsprov` command.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use nfsprov_testbed::Testbed;

#[derive(Parser)]
#[command(about = "Simulated NFS servers on this machine, for nfsprov's tests and demos")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N simulated servers and print how to register them.
    Up {
        n: usize,
        #[arg(long)]
        dir: PathBuf,
        /// nfs-ganesha servers in network namespaces, with this many client hosts, instead of
        /// kernel-NFS (exportfs) servers.
        #[arg(long)]
        ganesha_clients: Option<usize>,
    },
    /// Stop the servers of a test bed (and remove its files with --remove).
    Down {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        remove: bool,
    },
    /// Register a running test bed's servers with nfsprov (by running `nfsprov server add` and
    /// `nfsprov rootpath add`), each with root path /srv/nfsprov/pool1 of the given capacity.
    Register {
        #[arg(long)]
        dir: PathBuf,
        /// nfsprov's data directory (passed on as `--data-dir`).
        #[arg(long)]
        data_dir: PathBuf,
        /// The nfsprov command to run.
        #[arg(long, default_value = "nfsprov")]
        nfsprov: PathBuf,
        #[arg(long, default_value_t = 100)]
        capacity_gb: i64,
        /// Register the servers as <prefix><name> (to register several test beds).
        #[arg(long, default_value = "")]
        name_prefix: String,
    },
    /// Start a real OpenLDAP slapd with the tests' directory (users, groups, a disabled
    /// account, a test CA) on loopback, print nfsprov's LDAP settings for it, and keep it
    /// running until Enter (or Ctrl-C).
    Slapd {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Start a real PostgreSQL (initdb in a new directory under /tmp, a free loopback port, a
    /// role and database for nfsprov), print `NFSPROV_DATABASE_URL=<url>`, and keep it running
    /// until standard input ends (Enter, or EOF) or SIGINT/SIGTERM; then stop it and remove its
    /// directory.
    Postgres {
        /// TLS only: `ssl = on`, a certificate for 127.0.0.1 signed by a test CA, non-TLS TCP
        /// rejected; the URL asks for `sslmode=verify-full` with that CA as `sslrootcert`.
        #[arg(long)]
        tls: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NFSPROV_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Up {
            n,
            dir,
            ganesha_clients,
        } => {
            let tb = match ganesha_clients {
                Some(c) => Testbed::up_ganesha(&dir, n, c)?,
                None => Testbed::up(&dir, n)?,
            };
            for s in &tb.servers {
                println!("{}\t{}:{}\t{}", s.name, s.ssh_host, s.ssh_port, s.host_key);
            }
            println!("client key: {}", tb.client_key.display());
        }
        Cmd::Down { dir, remove } => Testbed::load(&dir)?.down(remove)?,
        Cmd::Register {
            dir,
            data_dir,
            nfsprov,
            capacity_gb,
            name_prefix,
        } => {
            let tb = Testbed::load(&dir)?;
            for args in tb.register_args(&name_prefix, capacity_gb) {
                nfsprov_cli(&nfsprov, &data_dir, &args)?;
            }
        }
        Cmd::Slapd { dir } => {
            use nfsprov_testbed::slapd;
            let s = slapd::Slapd::start(&dir)?;
            let roles = format!(
                "admin={};user={};auditor={}",
                slapd::group_dn("nfs-admins"),
                slapd::group_dn("nfs-users"),
                slapd::group_dn("nfs-auditors")
            );
            std::fs::write(
                dir.join("bind-password"),
                format!("{}\n", slapd::SERVICE_PASSWORD),
            )?;
            println!("NFSPROV_LDAP_URL={}", s.ldaps_url());
            println!("NFSPROV_LDAP_CA_FILE={}", s.ca_file().display());
            println!("NFSPROV_LDAP_BIND_DN={}", slapd::SERVICE_DN);
            println!(
                "NFSPROV_LDAP_BIND_PASSWORD_FILE={}",
                std::fs::canonicalize(dir.join("bind-password"))?.display()
            );
            println!("NFSPROV_LDAP_USER_BASE={}", slapd::PEOPLE_DN);
            println!("NFSPROV_LDAP_GROUP_BASE={}", slapd::GROUPS_DN);
            println!("NFSPROV_LDAP_ROLE_GROUPS='{roles}'");
            for u in slapd::USERS {
                eprintln!("user {} password {}", u.uid, u.password);
            }
            eprintln!(
                "slapd runs (StartTLS on {}); press Enter (or Ctrl-C) to stop it",
                s.ldap_url()
            );
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(s);
        }
        Cmd::Postgres { tls } => {
            use std::io::Write as _;
            let pg = if tls {
                nfsprov_testbed::postgres::Postgres::start_tls()?
            } else {
                nfsprov_testbed::postgres::Postgres::start()?
            };
            println!("NFSPROV_DATABASE_URL={}", pg.url());
            std::io::stdout().flush()?;
            eprintln!(
                "PostgreSQL runs in {} (log: {}); press Enter (or Ctrl-C) to stop it",
                pg.dir().display(),
                pg.log_path().display()
            );
            wait_for_enter_or_signal()?;
            drop(pg);
        }
    }
    Ok(())
}

/// Returns on a line (or the end) of standard input, SIGINT or SIGTERM: what was started is
/// then dropped, which a plain Ctrl-C would skip.
fn wait_for_enter_or_signal() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut line = String::new();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        tokio::select! {
            _ = stdin.read_line(&mut line) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        Ok(())
    });
    // The read of standard input runs on a blocking thread that a signal leaves waiting: a
    // plain drop of the runtime would wait for it.
    rt.shutdown_background();
    res
}

/// Runs `nfsprov --data-dir D args...`, its output passed through; fails when it does.
fn nfsprov_cli(nfsprov: &PathBuf, data_dir: &PathBuf, args: &[String]) -> anyhow::Result<()> {
    let status = Command::new(nfsprov)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .status()
        .with_context(|| format!("running {}", nfsprov.display()))?;
    if !status.success() {
        bail!("{} {} failed ({status})", nfsprov.display(), args.join(" "));
    }
    Ok(())
}
