//! The `nfsprov` command: the API server and admin commands on the database.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use nfsprov::api::response::{RootPathBody, ServerBody, UserBody};
use nfsprov::datastore::{NewServer, UserChange};
use nfsprov::model::{DeletePolicy, Role};
use nfsprov::settings::ServeSettings;
use nfsprov::{admin, serve};

#[derive(Parser)]
#[command(
    version,
    about = "Self-service NFS volumes on Linux NFS servers, over SSH"
)]
struct Cli {
    /// Directory holding the SQLite database and SSH state.
    #[arg(
        long,
        env = "NFSPROV_DATA_DIR",
        default_value = "./nfsprov-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The database: `postgres://user:password@host/db` for several nodes on one PostgreSQL.
    /// Without it, the SQLite file `nfsprov.db` in the data directory.
    #[arg(
        long,
        env = "NFSPROV_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

// One value, parsed once at start: the size of its largest variant (serve's settings) costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the API and the reconcilers.
    Serve {
        #[arg(long, env = "NFSPROV_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        settings: Box<ServeSettings>,
    },
    /// Register and list NFS servers.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Register and list root paths (where volumes are created).
    #[command(subcommand)]
    Rootpath(RootpathCmd),
    /// Add, change and list users.
    #[command(subcommand)]
    User(UserCmd),
    /// Check and export the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Move the database.
    #[command(subcommand)]
    Db(DbCmd),
}

#[derive(Subcommand)]
enum DbCmd {
    /// Copy the SQLite database of the data directory into an empty PostgreSQL database (every
    /// table, in one transaction), after which nodes run on it with NFSPROV_DATABASE_URL.
    /// Stop every node first; the SQLite file is only read. The URL is best given through
    /// NFSPROV_DATABASE_URL (or --database) rather than here, where the process list shows
    /// its password.
    MigrateTo {
        /// postgres://user:password@host/database; default: --database / NFSPROV_DATABASE_URL.
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain; name the first bad record and exit with status 1 if any.
    Verify,
    /// Write the records as JSON lines (one object per record) for a SIEM.
    Export {
        /// Only records with an id above this one.
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
}

#[derive(Subcommand)]
enum ServerCmd {
    Add {
        name: String,
        #[arg(long)]
        ssh_host: String,
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
        #[arg(long, default_value = "root")]
        ssh_user: String,
        /// Private key nfsprov logs in with (absolute path).
        #[arg(long)]
        ssh_key: PathBuf,
        /// The server's public host key, "ssh-ed25519 AAAA...": pinned; any other key is refused.
        #[arg(long)]
        host_key: String,
        /// Address NFS clients use; defaults to --ssh-host.
        #[arg(long, default_value = "")]
        nfs_address: String,
        /// How the server exports: knfsd (kernel NFS, exportfs) or ganesha (nfs-ganesha).
        #[arg(long, default_value = "knfsd")]
        backend: String,
    },
    /// Pin a new host key for a server (after a legitimate key change).
    Pin {
        name: String,
        #[arg(long)]
        host_key: String,
    },
    List,
}

#[derive(Subcommand)]
enum RootpathCmd {
    Add {
        /// Server name or id.
        #[arg(long)]
        server: String,
        /// Absolute directory on the server.
        path: String,
        #[arg(long)]
        capacity_gb: i64,
        /// What deleting a volume does with its data: retain (move to trash) or purge.
        #[arg(long, default_value = "retain")]
        delete_policy: String,
        /// Export policy as JSON, e.g. '{"allowed_options": ["no_root_squash"],
        /// "subtree_check": true}' (see README); left out: the safe defaults.
        #[arg(long)]
        export_policy: Option<String>,
        /// How it holds its volumes: directory (size not enforced), btrfs (a subvolume and
        /// qgroup limit per volume) or xfs-project (an XFS project quota per volume; XFS mounted
        /// with prjquota). The server is asked first.
        #[arg(long, default_value = "directory")]
        layout: String,
    },
    /// Replace a root path's export policy (JSON; fields left out get their safe default).
    Policy {
        id: i64,
        export_policy: String,
    },
    List,
}

/// An export policy given as JSON on the command line.
/// A change made from the command line, for its audit record: action, object, before, after.
type CliChange = (
    &'static str,
    String,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

/// Record a change made from the command line (the local user as the actor, as `server pin`
/// does); the change is made, so a record that cannot be written is a warning, not a failure.
async fn record_cli(db: &nfsprov::datastore::Datastore, command: &str, change: CliChange) {
    let (action, object, before, after) = change;
    let entry = nfsprov::audit::Entry {
        action: action.into(),
        object: Some(object),
        before,
        after,
        outcome: "recorded".into(),
        ..nfsprov::audit::Entry::default()
    };
    let ctx = nfsprov::audit::Context::cli(command);
    if let Err(e) = db.record_audit(&ctx, &entry).await {
        eprintln!("warning: the change is made, but its audit record could not be written: {e:#}");
    }
}

/// A value as an audit record shows it.
fn fields(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn policy_arg(json: &str) -> anyhow::Result<nfsprov::spec::ExportPolicyDoc> {
    serde_json::from_str(json).context("the export policy is not a valid policy document")
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user. The password is read from a prompt (twice, not echoed) on a terminal, else
    /// from the first line of standard input: never from the command line, where every local
    /// user could read it in the process list.
    Add {
        username: String,
        #[arg(long, default_value_t = 0)]
        quota_gb: i64,
        /// Short for --role admin.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// admin, user or auditor (reads everything, changes nothing).
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
    },
    Set {
        username: String,
        #[arg(long)]
        quota_gb: Option<i64>,
        #[arg(long)]
        locked: Option<bool>,
        #[arg(long)]
        admin: Option<bool>,
        /// admin, user or auditor; wins over --admin.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Set a new password, read as for `user add`.
        #[arg(long)]
        password: bool,
    },
    List,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: give admin, user or auditor"))
}

fn main() {
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NFSPROV_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// glibc gives every thread that allocates its own heap arena and rarely returns their free
/// memory; with tokio's and sqlx's threads that multiplied the RSS of `nfsprov serve` several
/// times over under load (measured by crates/bench). Two arenas keep it close to what is live.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called first thing in main, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A new password for `username`: from a prompt without echo when standard input is a
/// terminal (asked twice), else the first line of standard input.
fn read_password(username: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {username}: "))
            .context("reading the password from the terminal")?;
        let again = rpassword::prompt_password("again: ")
            .context("reading the password from the terminal")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ; nothing was changed"
        );
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(
        !password.is_empty(),
        "no password on standard input: pipe it in (e.g. `printf '%s\\n' \"$PW\" | nfsprov user add {username}`) or run on a terminal to be prompted"
    );
    Ok(password.to_string())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve { listen, settings } => {
            serve::serve(&cli.data_dir, cli.database.as_deref(), listen, *settings).await
        }
        Cmd::Server(cmd) => {
            let db = serve::open_db(&cli.data_dir, cli.database.as_deref()).await?;
            match cmd {
                ServerCmd::Add {
                    name,
                    ssh_host,
                    ssh_port,
                    ssh_user,
                    ssh_key,
                    host_key,
                    nfs_address,
                    backend,
                } => {
                    let ssh_key = std::path::absolute(&ssh_key)?;
                    let s = admin::add_server(
                        &db,
                        NewServer {
                            name,
                            ssh_host,
                            ssh_port,
                            ssh_user,
                            ssh_key: ssh_key.display().to_string(),
                            host_key,
                            nfs_address,
                            backend,
                        },
                    )
                    .await?;
                    let mut after = fields(&ServerBody::from(&s));
                    after["host_key"] = nfsprov::audit::host_key_fingerprint(&s.host_key).into();
                    let object = format!("server/{}", s.name);
                    let change = ("server.create", object, None, Some(after));
                    record_cli(&db, &format!("server add {}", s.name), change).await;
                    println!("server {} added (id {})", s.name, s.id);
                }
                ServerCmd::Pin { name, host_key } => {
                    let s = admin::find_server(&db, &name).await?;
                    let key = admin::normalize_host_key(&host_key)?;
                    let ctx = nfsprov::audit::Context::cli(&format!("server pin {}", s.name));
                    db.set_server_host_key(s.id, &key, &ctx).await?;
                    println!("server {}: host key pinned to {key}", s.name);
                }
                ServerCmd::List => {
                    for s in db.servers().await? {
                        println!(
                            "{}\t{}\t{}@{}:{}\t{}\t{}",
                            s.id,
                            s.name,
                            s.ssh_user,
                            s.ssh_host,
                            s.ssh_port,
                            s.status,
                            s.status_message.unwrap_or_default()
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Rootpath(cmd) => {
            let db = serve::open_db(&cli.data_dir, cli.database.as_deref()).await?;
            match cmd {
                RootpathCmd::Add {
                    server,
                    path,
                    capacity_gb,
                    delete_policy,
                    export_policy,
                    layout,
                } => {
                    let policy = DeletePolicy::parse(&delete_policy)
                        .context("--delete-policy must be retain or purge")?;
                    let doc = export_policy.as_deref().map(policy_arg).transpose()?;
                    let layout = admin::checked_layout(Some(&layout))?;
                    let state_dir = cli.data_dir.join("ssh");
                    serve::private_dir(&state_dir)?;
                    let rp = admin::add_root_path_checked(
                        &db,
                        &server,
                        &path,
                        capacity_gb,
                        policy,
                        doc.as_ref(),
                        layout,
                        |server, path, layout| async move {
                            nfsprov::reconcile::check_layout(&state_dir, &server, &path, layout)
                                .await
                        },
                    )
                    .await?;
                    let after = Some(fields(&RootPathBody::from(&rp)));
                    let change = (
                        "rootpath.create",
                        format!("rootpath/{}", rp.id),
                        None,
                        after,
                    );
                    record_cli(&db, "rootpath add", change).await;
                    println!("root path {} added: {}:{}", rp.id, rp.server_name, rp.path);
                }
                RootpathCmd::Policy { id, export_policy } => {
                    let doc = policy_arg(&export_policy)?;
                    let id = nfsprov::model::RootPathId(id);
                    let before = db.root_path(id).await?;
                    let rp = admin::set_export_policy(&db, id, &doc).await?;
                    let policy = |rp| Some(fields(&RootPathBody::from(rp).export_policy));
                    let object = format!("rootpath/{}", rp.id);
                    let change = (
                        "rootpath.export_policy",
                        object,
                        policy(&before),
                        policy(&rp),
                    );
                    record_cli(&db, &format!("rootpath policy {}", rp.id), change).await;
                    println!(
                        "root path {}: export policy {}",
                        rp.id,
                        rp.export_policy.to_json()
                    );
                }
                RootpathCmd::List => {
                    for rp in db.root_paths().await? {
                        println!(
                            "{}\t{}:{}\t{}/{} GB\t{}\t{}",
                            rp.id,
                            rp.server_name,
                            rp.path,
                            rp.allocated_gb,
                            rp.capacity_gb,
                            rp.delete_policy.as_str(),
                            rp.export_policy.to_json()
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Audit(cmd) => audit(&cli.data_dir, cli.database.as_deref(), cmd).await,
        Cmd::Db(DbCmd::MigrateTo { url }) => {
            let url = url.or(cli.database).context(
                "give the PostgreSQL database to copy into: NFSPROV_DATABASE_URL=postgres://… nfsprov db migrate-to",
            )?;
            let source = serve::db_path(&cli.data_dir);
            let done = nfsprov::datastore::migrate_to(&source, &url).await?;
            println!("copied {} into {}:", source.display(), done.target);
            for (table, rows) in &done.tables {
                println!("  {table:<16} {rows:>10} rows (counted on both sides)");
            }
            println!("  audit trail: highest id given {}", done.audit_seq);
            for (column, next) in &done.next_ids {
                println!("  next {column}: {next}");
            }
            println!(
                "start the nodes with NFSPROV_DATABASE_URL set to this database; {} is left as it was",
                source.display()
            );
            Ok(())
        }
        Cmd::User(cmd) => {
            let db = serve::open_db(&cli.data_dir, cli.database.as_deref()).await?;
            match cmd {
                UserCmd::Add {
                    username,
                    quota_gb,
                    admin,
                    role,
                } => {
                    let password = read_password(&username)?;
                    let role = role.unwrap_or(Role::from_is_admin(admin));
                    let u = admin::add_user(&db, &username, &password, role, quota_gb).await?;
                    let after = Some(fields(&UserBody::from(&u)));
                    let change = ("user.create", format!("user/{}", u.username), None, after);
                    record_cli(&db, &format!("user add {}", u.username), change).await;
                    println!(
                        "user {} added (role {}, quota {} GB)",
                        u.username, u.role, u.quota_gb
                    );
                }
                UserCmd::Set {
                    username,
                    quota_gb,
                    locked,
                    admin,
                    role,
                    password,
                } => {
                    let before = db.user_by_name(&username).await?;
                    let password_hash = if password {
                        Some(admin::checked_password_hash(&read_password(&username)?)?)
                    } else {
                        None
                    };
                    let u = db
                        .update_user(
                            &username,
                            &UserChange {
                                quota_gb,
                                locked,
                                is_admin: admin,
                                role,
                                password_hash,
                            },
                        )
                        .await?;
                    // A new password only as "changed", never it or its hash.
                    let mut after = fields(&UserBody::from(&u));
                    if password {
                        after["password"] = "changed".into();
                    }
                    let before = Some(fields(&UserBody::from(&before)));
                    let change = (
                        "user.update",
                        format!("user/{}", u.username),
                        before,
                        Some(after),
                    );
                    record_cli(&db, &format!("user set {}", u.username), change).await;
                    println!(
                        "user {}: quota {} GB, used {} GB, locked {}, admin {}, role {}",
                        u.username,
                        u.quota_gb,
                        u.used_gb,
                        u.locked,
                        u.is_admin(),
                        u.role
                    );
                }
                UserCmd::List => {
                    for u in db.users().await? {
                        println!(
                            "{}\t{}/{} GB\t{}{}",
                            u.username,
                            u.used_gb,
                            u.quota_gb,
                            u.role,
                            if u.locked { "\tlocked" } else { "" }
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

async fn audit(
    data_dir: &std::path::Path,
    database: Option<&str>,
    cmd: AuditCmd,
) -> anyhow::Result<()> {
    let db = serve::open_db(data_dir, database).await?;
    match cmd {
        AuditCmd::Verify => match db.verify_audit().await? {
            Ok(v) => {
                println!(
                    "audit trail intact: {} records, newest hash {}",
                    v.records, v.head
                );
                Ok(())
            }
            Err(broken) => {
                eprintln!("error: {broken}");
                std::process::exit(1);
            }
        },
        AuditCmd::Export { since } => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            db.each_audit_record(since, |r| {
                serde_json::to_writer(&mut out, &r).map_err(anyhow::Error::from)?;
                out.write_all(b"\n").map_err(anyhow::Error::from)?;
                Ok(())
            })
            .await?;
            out.flush().context("writing the export")?;
            Ok(())
        }
    }
}
