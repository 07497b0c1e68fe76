//! Settings of `nfsprov serve`: reconciler timing, HTTP limits and password-guessing limits.
//!
//! Each is a flag of `nfsprov serve` and an `NFSPROV_*` variable (clap reads both; the flag
//! wins). A malformed, zero or negative value is refused when the service starts, with a message
//! naming the variable: a typo must not silently fall back to a default. `Default` gives the
//! same values as an empty environment, for code and tests that build settings directly.
//!
//! It imports only `spec` (for the request limits' bounds) and `forwarded` (the trusted
//! proxies' list), so `api`, `auth`, `reconcile` and `serve` all take their settings from here.

use std::ffi::OsStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Args, Command};

use crate::spec::{
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_VOLUME_GB, Limits, MAX_CLIENTS_CEILING, MAX_GB,
};
use crate::spec::{DEFAULT_MAX_SNAPSHOTS, MAX_SNAPSHOTS_CEILING};

pub use crate::forwarded::TrustedProxies;

/// Everything `nfsprov serve` reads besides its data directory and listen address.
#[derive(Args, Clone, Debug, Default)]
pub struct ServeSettings {
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub http: HttpLimits,
    #[command(flatten)]
    pub auth: AuthLimits,
    #[command(flatten)]
    pub requests: RequestLimits,
    /// Boxed: it is most of the settings' size, and `nfsprov`'s command enum holds them.
    #[command(flatten)]
    pub ldap: Box<LdapSettings>,
    #[command(flatten)]
    pub tls: TlsSettings,
}

/// HTTPS for the API. Without a certificate the API speaks plain HTTP, and then only on a
/// loopback address unless `allow_plain_http` says otherwise: passwords and tokens must not
/// cross a network in clear text by accident.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "TLS")]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first. Needs --tls-key.
    #[arg(long = "tls-cert", env = "NFSPROV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Needs --tls-cert.
    #[arg(long = "tls-key", env = "NFSPROV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy, say).
    #[arg(long = "allow-plain-http", env = "NFSPROV_ALLOW_PLAIN_HTTP", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_plain_http: bool,
}

/// Timing of the reconcilers.
#[derive(Args, Debug, Clone, Copy, PartialEq)]
#[command(next_help_heading = "Reconciler")]
pub struct Tuning {
    /// How often a reconciler re-checks its server with no request pending (drift repair).
    #[arg(long = "resync-secs", env = "NFSPROV_RESYNC_SECS", default_value = "30", value_parser = Secs::ANY)]
    pub resync: Duration,
    /// Longest wait between attempts to reach a server that is down.
    #[arg(long = "max-backoff-secs", env = "NFSPROV_MAX_BACKOFF_SECS", default_value = "20", value_parser = Secs::ANY)]
    pub max_backoff: Duration,
    /// The longest a pass woken by a request waits for more requests to batch with (0: none).
    /// It bounds what a steady stream of requests adds to each one's wait for its pass.
    #[arg(long = "batch-window-ms", env = "NFSPROV_BATCH_WINDOW_MS", default_value = "100", value_parser = Millis)]
    pub batch_window: Duration,
    /// Within the batch window, the pass starts as soon as no request came for this long
    /// (0: it always waits the whole window). A lone create waits only this long; a storm
    /// of creates shares a few passes instead of racing them on the server.
    #[arg(long = "batch-quiet-ms", env = "NFSPROV_BATCH_QUIET_MS", default_value = "3", value_parser = Millis)]
    pub batch_quiet: Duration,
    /// Time limit of one pass on the server; when it passes, the server kills what the pass
    /// started there.
    #[arg(long = "pass-timeout-secs", env = "NFSPROV_PASS_TIMEOUT_SECS", default_value = "120", value_parser = Secs::ANY)]
    pub pass_timeout: Duration,
    /// Time limit of one host name lookup on the server.
    #[arg(long = "resolve-timeout-secs", env = "NFSPROV_RESOLVE_TIMEOUT_SECS", default_value = "5", value_parser = Secs::ANY)]
    pub resolve_timeout: Duration,
    /// A pass running longer than this is reported (server `slow`, waiting volumes' last_error)
    /// while it goes on; and again every this often.
    #[arg(long = "slow-pass-secs", env = "NFSPROV_SLOW_PASS_SECS", default_value = "5", value_parser = Secs::ANY)]
    pub slow_after: Duration,
    /// How often a reconciler samples what its server's volumes and root paths hold (after a
    /// pass; `du` of directory volumes can be slow, so not on every pass).
    #[arg(long = "usage-interval-secs", env = "NFSPROV_USAGE_INTERVAL_SECS", default_value = "900", value_parser = Secs::ANY)]
    pub usage_interval: Duration,
    /// How long a node's lease on a server lasts unless renewed (every third of it): only the
    /// holder reconciles the server, and another node takes over this long after the holder
    /// stopped. 1 to 3600 seconds.
    #[arg(long = "lease-secs", env = "NFSPROV_LEASE_SECS", default_value = "15", value_parser = Secs::LEASE)]
    pub lease: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            resync: Duration::from_secs(30),
            max_backoff: Duration::from_secs(20),
            batch_window: Duration::from_millis(100),
            batch_quiet: Duration::from_millis(3),
            pass_timeout: Duration::from_secs(120),
            resolve_timeout: Duration::from_secs(5),
            slow_after: Duration::from_secs(5),
            usage_interval: Duration::from_secs(900),
            lease: Duration::from_secs(15),
        }
    }
}

/// Limits of the HTTP front door.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "HTTP limits")]
pub struct HttpLimits {
    /// Connections served at once; beyond it new ones wait in the listen backlog.
    #[arg(long = "max-connections", env = "NFSPROV_MAX_CONNECTIONS", default_value = "4096", value_parser = at_least_one::<usize>())]
    pub max_connections: usize,
    /// Connections from one client address at once; beyond it new ones are closed at once.
    #[arg(long = "max-connections-per-ip", env = "NFSPROV_MAX_CONNECTIONS_PER_IP", default_value = "256", value_parser = at_least_one::<usize>())]
    pub max_connections_per_ip: usize,
    /// Time to send a request's headers, and the longest idle time between requests.
    #[arg(long = "header-timeout-secs", env = "NFSPROV_HEADER_TIMEOUT_SECS", default_value = "20", value_parser = Secs::ANY)]
    pub header_timeout: Duration,
    /// Longest pause while a request body is being sent.
    #[arg(long = "body-timeout-secs", env = "NFSPROV_BODY_TIMEOUT_SECS", default_value = "20", value_parser = Secs::ANY)]
    pub body_timeout: Duration,
    /// Longest time for a whole request (`?wait=true` waits up to 60 s of it).
    #[arg(long = "request-timeout-secs", env = "NFSPROV_REQUEST_TIMEOUT_SECS", default_value = "90", value_parser = Secs::ANY)]
    pub request_timeout: Duration,
    /// Largest request body.
    #[arg(long = "max-body-bytes", env = "NFSPROV_MAX_BODY_BYTES", default_value = "1048576", value_parser = at_least_one::<usize>())]
    pub max_body_bytes: usize,
    #[arg(skip = 64usize)]
    pub max_headers: usize,
    #[arg(skip = 16 * 1024usize)]
    pub max_header_bytes: usize,
    #[command(flatten)]
    pub rate: RateLimits,
    /// The audit of denied attempts (issue 11, audit).
    #[command(flatten)]
    pub audit: AuditLimits,
    /// Proxies (load balancers) whose X-Forwarded-For names the client: addresses and
    /// networks, comma-separated (10.0.0.5,10.0.0.0/8,fd00::/8), at most 64. Empty: none, the
    /// client is always the connection's peer. List only proxies that set or append the header.
    #[arg(long = "trusted-proxies", env = "NFSPROV_TRUSTED_PROXIES", default_value = "", value_parser = Proxies)]
    pub trusted_proxies: TrustedProxies,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(90),
            max_body_bytes: 1 << 20,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            rate: RateLimits::default(),
            audit: AuditLimits::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Rate limits on changes (POST, PUT, PATCH and DELETE of both APIs), per user and per source
/// address (`ratelimit`). A bucket holds `burst` requests and refills at `per_second`.
#[derive(Args, Clone, Copy, Debug, PartialEq)]
#[command(next_help_heading = "Rate limits")]
pub struct RateLimits {
    /// Changes one user may make per second, sustained.
    #[arg(long = "rate-per-user", env = "NFSPROV_RATE_PER_USER", default_value = "50", value_parser = at_least_one::<u32>())]
    pub per_user: u32,
    /// Changes one user may make at once, above the sustained rate.
    #[arg(long = "rate-burst-per-user", env = "NFSPROV_RATE_BURST_PER_USER", default_value = "1000", value_parser = at_least_one::<u32>())]
    pub burst_per_user: u32,
    /// Changes one source address (an IPv6 client: its /64) may make per second, sustained.
    #[arg(long = "rate-per-ip", env = "NFSPROV_RATE_PER_IP", default_value = "200", value_parser = at_least_one::<u32>())]
    pub per_source: u32,
    /// Changes one source address may make at once, above the sustained rate.
    #[arg(long = "rate-burst-per-ip", env = "NFSPROV_RATE_BURST_PER_IP", default_value = "5000", value_parser = at_least_one::<u32>())]
    pub burst_per_source: u32,
    /// How long a refused change's 429 is held before it is sent (0: at once). A client that
    /// keeps sending past its limit gets one refusal per connection per this time, so its
    /// refusals cannot take the service's CPU from other users (`ratelimit`).
    #[arg(long = "rate-refusal-hold-ms", env = "NFSPROV_RATE_REFUSAL_HOLD_MS", default_value = "1000", value_parser = Millis)]
    pub refusal_hold: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_user: 50,
            burst_per_user: 1000,
            per_source: 200,
            burst_per_source: 5000,
            refusal_hold: Duration::from_secs(1),
        }
    }
}

/// The bound on audit records of denied attempts, per minute: refused requests cannot fill
/// the disk (at the defaults, at most 120 records, about 60 KB, a minute).
#[derive(Args, Clone, Copy, Debug, PartialEq)]
#[command(next_help_heading = "Audit")]
pub struct AuditLimits {
    /// Denied attempts recorded per source address and minute; more are only counted.
    #[arg(long = "audit-denied-per-source", env = "NFSPROV_AUDIT_DENIED_PER_SOURCE", default_value = "20", value_parser = at_least_one::<u32>())]
    pub denied_per_source: u32,
    /// Denied attempts recorded per minute from all sources; more are only counted.
    #[arg(long = "audit-denied-total", env = "NFSPROV_AUDIT_DENIED_TOTAL", default_value = "120", value_parser = at_least_one::<u32>())]
    pub denied_total: u32,
}

impl Default for AuditLimits {
    fn default() -> Self {
        AuditLimits {
            denied_per_source: 20,
            denied_total: 120,
        }
    }
}

/// Limits on password guessing.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "Authentication limits")]
pub struct AuthLimits {
    /// Failed sign-ins one source address may make per window.
    #[arg(long = "auth-failures-per-ip", env = "NFSPROV_AUTH_FAILURES_PER_IP", default_value = "30", value_parser = at_least_one::<u32>())]
    pub failures_per_source: u32,
    /// Failed sign-ins one user name may get per window (from sources it never signed in from).
    #[arg(long = "auth-failures-per-user", env = "NFSPROV_AUTH_FAILURES_PER_USER", default_value = "100", value_parser = at_least_one::<u32>())]
    pub failures_per_user: u32,
    /// The window of the two limits above.
    #[arg(long = "auth-window-secs", env = "NFSPROV_AUTH_WINDOW_SECS", default_value = "60", value_parser = Secs::ANY)]
    pub window: Duration,
    /// Password checks one source may have running at once; more are answered 429 at once.
    #[arg(long = "auth-checks-per-ip", env = "NFSPROV_AUTH_CHECKS_PER_IP", default_value = "2", value_parser = at_least_one::<usize>())]
    pub checks_per_source: usize,
    /// Password checks running at once in all (each holds 19 MiB), and as many again for
    /// users signing in from where they did before.
    #[arg(skip = default_concurrent_checks())]
    pub concurrent_checks: usize,
}

fn default_concurrent_checks() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            failures_per_source: 30,
            failures_per_user: 100,
            window: Duration::from_secs(60),
            checks_per_source: 2,
            concurrent_checks: default_concurrent_checks(),
        }
    }
}

/// Bounds on what one request may ask for (`spec::limits`).
#[derive(Args, Clone, Copy, Debug, PartialEq)]
#[command(next_help_heading = "Request limits")]
pub struct RequestLimits {
    /// Largest volume a user may ask for, in GB.
    #[arg(long = "max-volume-gb", env = "NFSPROV_MAX_VOLUME_GB", default_value_t = DEFAULT_MAX_VOLUME_GB, value_parser = in_range::<i64>(1, MAX_GB))]
    pub max_volume_gb: i64,
    /// Most clients per volume.
    #[arg(long = "max-clients", env = "NFSPROV_MAX_CLIENTS", default_value_t = DEFAULT_MAX_CLIENTS, value_parser = in_range::<usize>(1, MAX_CLIENTS_CEILING))]
    pub max_clients: usize,
    /// Most snapshots per volume (btrfs root paths).
    #[arg(long = "max-snapshots", env = "NFSPROV_MAX_SNAPSHOTS", default_value_t = DEFAULT_MAX_SNAPSHOTS, value_parser = in_range::<usize>(1, MAX_SNAPSHOTS_CEILING))]
    pub max_snapshots: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_volume_gb: DEFAULT_MAX_VOLUME_GB,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_snapshots: DEFAULT_MAX_SNAPSHOTS,
        }
    }
}

impl From<RequestLimits> for Limits {
    fn from(r: RequestLimits) -> Limits {
        Limits {
            max_volume_gb: r.max_volume_gb,
            max_clients: r.max_clients,
            max_snapshots: r.max_snapshots,
        }
    }
}

/// Sign-in through an LDAP directory or Active Directory (`ldap`); off unless a URL is set.
/// Checked when the service starts (`ldap::Directory::from_settings`): the TLS settings, the
/// CA and password files, the filters and the group map.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "LDAP/AD sign-in")]
pub struct LdapSettings {
    /// The directory: `ldaps://host[:port]`, or `ldap://host[:port]` with StartTLS. Unset: no
    /// directory, local users only.
    #[arg(long = "ldap-url", env = "NFSPROV_LDAP_URL")]
    pub url: Option<String>,
    /// Use StartTLS on an `ldap://` URL (plain LDAP without it is refused).
    #[arg(long = "ldap-starttls", env = "NFSPROV_LDAP_STARTTLS")]
    pub starttls: bool,
    /// PEM file of the CA certificates that may sign the directory's certificate (default:
    /// the system's).
    #[arg(long = "ldap-ca-file", env = "NFSPROV_LDAP_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// DN nfsprov binds as to search for users and groups (unset: anonymous search).
    #[arg(long = "ldap-bind-dn", env = "NFSPROV_LDAP_BIND_DN")]
    pub bind_dn: Option<String>,
    /// File holding the bind DN's password (first line); never the password itself.
    #[arg(
        long = "ldap-bind-password-file",
        env = "NFSPROV_LDAP_BIND_PASSWORD_FILE"
    )]
    pub bind_password_file: Option<std::path::PathBuf>,
    /// Where users are searched (subtree).
    #[arg(
        long = "ldap-user-base",
        env = "NFSPROV_LDAP_USER_BASE",
        default_value = ""
    )]
    pub user_base: String,
    /// Filter finding a user by sign-in name; `{username}` is replaced, escaped.
    #[arg(long = "ldap-user-filter", env = "NFSPROV_LDAP_USER_FILTER", default_value = DEFAULT_LDAP_USER_FILTER)]
    pub user_filter: String,
    /// Where groups are searched (subtree); empty: the user base.
    #[arg(
        long = "ldap-group-base",
        env = "NFSPROV_LDAP_GROUP_BASE",
        default_value = ""
    )]
    pub group_base: String,
    /// Filter finding the groups a user is in; `{dn}` is replaced by the user's DN, escaped.
    #[arg(long = "ldap-group-filter", env = "NFSPROV_LDAP_GROUP_FILTER", default_value = DEFAULT_LDAP_GROUP_FILTER)]
    pub group_filter: String,
    /// Groups that give a role: `ROLE=GROUP-DN` entries separated by `;` (role admin, user or
    /// auditor). The first entry naming one of the user's groups decides; a user in none may
    /// not sign in.
    #[arg(
        long = "ldap-role-groups",
        env = "NFSPROV_LDAP_ROLE_GROUPS",
        default_value = ""
    )]
    pub role_groups: String,
    /// Quota of a user created at their first sign-in through the directory, in GB.
    #[arg(long = "ldap-default-quota-gb", env = "NFSPROV_LDAP_DEFAULT_QUOTA_GB", default_value = "0", value_parser = in_range::<i64>(0, MAX_GB))]
    pub default_quota_gb: i64,
    /// Longest time for one sign-in's conversation with the directory; then it counts as down.
    #[arg(long = "ldap-timeout-secs", env = "NFSPROV_LDAP_TIMEOUT_SECS", default_value = "5", value_parser = Secs::ANY)]
    pub timeout: Duration,
}

pub const DEFAULT_LDAP_USER_FILTER: &str = "(uid={username})";
pub const DEFAULT_LDAP_GROUP_FILTER: &str = "(member={dn})";

impl Default for LdapSettings {
    fn default() -> Self {
        LdapSettings {
            url: None,
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            user_base: String::new(),
            user_filter: DEFAULT_LDAP_USER_FILTER.into(),
            group_base: String::new(),
            group_filter: DEFAULT_LDAP_GROUP_FILTER.into(),
            role_groups: String::new(),
            default_quota_gb: 0,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A refusal that names where the value came from: the variable and the flag.
fn refuse(cmd: &Command, arg: Option<&Arg>, value: &OsStr, why: &str) -> clap::Error {
    let value = value.to_string_lossy();
    let (env, long) = match arg {
        Some(a) => (
            a.get_env().map(|e| e.to_string_lossy().into_owned()),
            a.get_long(),
        ),
        None => (None, None),
    };
    let setting = match (env, long) {
        (Some(env), Some(long)) => format!("{env}={value:?} (or --{long})"),
        (Some(env), None) => format!("{env}={value:?}"),
        (None, Some(long)) => format!("--{long}={value:?}"),
        (None, None) => format!("setting {value:?}"),
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid {setting}: {why}\n"),
    )
    .with_cmd(cmd)
}

/// A duration in seconds, more than zero; fractions allowed ("0.5"). `Secs::ANY` takes up to
/// `LONGEST`; a setting with a narrower range names it (`Secs::LEASE`).
#[derive(Clone, Copy)]
struct Secs {
    /// The range the setting takes, and how a refusal says it.
    range: Option<(Duration, Duration, &'static str)>,
}

impl Secs {
    const ANY: Secs = Secs { range: None };
    /// A lease time: from 1 s (renewals every third of it must reach the database in time) to
    /// an hour (a dead holder's servers wait that long).
    const LEASE: Secs = Secs {
        range: Some((
            Duration::from_secs(1),
            Duration::from_secs(3600),
            "must be from 1 to 3600 seconds",
        )),
    };
}

impl TypedValueParser for Secs {
    type Value = Duration;
    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        parse_secs(&value.to_string_lossy())
            .and_then(|d| match self.range {
                Some((lo, hi, why)) if !(lo..=hi).contains(&d) => Err(why),
                _ => Ok(d),
            })
            .map_err(|why| refuse(cmd, arg, value, why))
    }
}

fn parse_secs(text: &str) -> Result<Duration, &'static str> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, such as 30 or 0.5")?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err("must be a number of seconds above 0");
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= LONGEST => Ok(d),
        _ => Err("must be at most a year (31536000 seconds)"),
    }
}

/// The longest duration any setting takes: a year. Far beyond any useful timeout or interval,
/// and far from where adding it to the clock would overflow (which panics).
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration in whole milliseconds; zero allowed (it turns the feature off).
#[derive(Clone, Copy)]
struct Millis;

impl TypedValueParser for Millis {
    type Value = Duration;
    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        value
            .to_string_lossy()
            .trim()
            .parse::<u64>()
            .map_err(|_| "expected a whole number of milliseconds, 0 or more")
            .map(Duration::from_millis)
            .and_then(|d| {
                (d <= LONGEST)
                    .then_some(d)
                    .ok_or("must be at most a year (31536000000 milliseconds)")
            })
            .map_err(|why| refuse(cmd, arg, value, why))
    }
}

/// `NFSPROV_TRUSTED_PROXIES`: a list of addresses and networks (`forwarded::TrustedProxies`).
#[derive(Clone, Copy)]
struct Proxies;

impl TypedValueParser for Proxies {
    type Value = TrustedProxies;
    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<TrustedProxies, clap::Error> {
        value
            .to_str()
            .ok_or_else(|| "not valid UTF-8".to_string())
            .and_then(str::parse)
            .map_err(|why| refuse(cmd, arg, value, &why))
    }
}

/// A count of at least 1, of the unsigned type `T` (clap checks at run time that the parser's
/// type is the field's, so each count type needs its own parser).
#[derive(Clone, Copy)]
struct AtLeastOne<T>(std::marker::PhantomData<T>);

fn at_least_one<T>() -> AtLeastOne<T> {
    AtLeastOne(std::marker::PhantomData)
}

/// The unsigned types `AtLeastOne` parses.
trait Count: Sized + Send + Sync + Clone + 'static {
    fn from_u64(n: u64) -> Option<Self>;
}

impl Count for usize {
    fn from_u64(n: u64) -> Option<Self> {
        usize::try_from(n).ok()
    }
}

impl Count for u32 {
    fn from_u64(n: u64) -> Option<Self> {
        u32::try_from(n).ok()
    }
}

fn parse_count<T: Count>(text: &str) -> Result<T, &'static str> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1"),
        Ok(n) => T::from_u64(n).ok_or("too large"),
        Err(_) => Err("expected a whole number, 1 or more"),
    }
}

impl<T: Count> TypedValueParser for AtLeastOne<T> {
    type Value = T;
    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        parse_count(&value.to_string_lossy()).map_err(|why| refuse(cmd, arg, value, why))
    }
}

/// A whole number from `min` to `max`, of the type `T`.
#[derive(Clone, Copy)]
struct InRange<T> {
    min: T,
    max: T,
}

fn in_range<T>(min: T, max: T) -> InRange<T> {
    InRange { min, max }
}

impl<T> TypedValueParser for InRange<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    type Value = T;
    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let why = format!("expected a whole number from {} to {}", self.min, self.max);
        match value.to_string_lossy().trim().parse::<T>() {
            Ok(n) if n >= self.min && n <= self.max => Ok(n),
            _ => Err(refuse(cmd, arg, value, &why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        settings: ServeSettings,
    }

    fn parse(args: &[&str]) -> Result<ServeSettings, String> {
        Cli::try_parse_from(std::iter::once("nfsprov").chain(args.iter().copied()))
            .map(|c| c.settings)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_default_impls() {
        // Unless the test's own environment sets one of the variables.
        if std::env::vars().any(|(k, _)| k.starts_with("NFSPROV_")) {
            return;
        }
        let s = parse(&[]).unwrap();
        assert_eq!(s.tuning, Tuning::default());
        assert_eq!(s.http, HttpLimits::default());
        assert_eq!(s.auth, AuthLimits::default());
        assert_eq!(s.requests, RequestLimits::default());
        assert_eq!(*s.ldap, LdapSettings::default());
        assert_eq!(s.tls, TlsSettings::default());
    }

    #[test]
    fn good_values_are_read() {
        let s = parse(&[
            "--resync-secs",
            "0.5",
            "--batch-window-ms",
            "0",
            "--batch-quiet-ms",
            "7",
            "--max-connections",
            "7",
            "--auth-failures-per-ip",
            "3",
        ])
        .unwrap();
        assert_eq!(s.tuning.resync, Duration::from_millis(500));
        assert_eq!(s.tuning.batch_window, Duration::ZERO);
        assert_eq!(s.tuning.batch_quiet, Duration::from_millis(7));
        assert_eq!(s.http.max_connections, 7);
        assert_eq!(s.auth.failures_per_source, 3);
        let s = parse(&["--trusted-proxies", "10.0.0.5, fd00::/8"]).unwrap();
        assert!(s.http.trusted_proxies.trusts("10.0.0.5".parse().unwrap()));
        assert!(s.http.trusted_proxies.trusts("fd00::9".parse().unwrap()));
        assert!(!s.http.trusted_proxies.trusts("10.0.0.6".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        for (flag, value, variable) in [
            ("--resync-secs", "abc", "NFSPROV_RESYNC_SECS"),
            ("--lease-secs", "0.5", "NFSPROV_LEASE_SECS"),
            ("--lease-secs", "3601", "NFSPROV_LEASE_SECS"),
            ("--resync-secs", "0", "NFSPROV_RESYNC_SECS"),
            ("--resync-secs", "-1", "NFSPROV_RESYNC_SECS"),
            ("--resync-secs", "NaN", "NFSPROV_RESYNC_SECS"),
            ("--resync-secs", "inf", "NFSPROV_RESYNC_SECS"),
            ("--max-backoff-secs", "1e30", "NFSPROV_MAX_BACKOFF_SECS"),
            // Past the clock's range (Instant + it panics), and the largest whole ms.
            ("--resync-secs", "1e19", "NFSPROV_RESYNC_SECS"),
            (
                "--pass-timeout-secs",
                "31536001",
                "NFSPROV_PASS_TIMEOUT_SECS",
            ),
            (
                "--batch-window-ms",
                "18446744073709551615",
                "NFSPROV_BATCH_WINDOW_MS",
            ),
            ("--batch-window-ms", "-5", "NFSPROV_BATCH_WINDOW_MS"),
            ("--batch-window-ms", "1.5", "NFSPROV_BATCH_WINDOW_MS"),
            ("--batch-quiet-ms", "-1", "NFSPROV_BATCH_QUIET_MS"),
            ("--pass-timeout-secs", "", "NFSPROV_PASS_TIMEOUT_SECS"),
            ("--max-connections", "0", "NFSPROV_MAX_CONNECTIONS"),
            ("--max-body-bytes", "1MB", "NFSPROV_MAX_BODY_BYTES"),
            ("--header-timeout-secs", "0", "NFSPROV_HEADER_TIMEOUT_SECS"),
            (
                "--auth-failures-per-ip",
                "4294967296",
                "NFSPROV_AUTH_FAILURES_PER_IP",
            ),
            ("--auth-window-secs", "-60", "NFSPROV_AUTH_WINDOW_SECS"),
            ("--auth-checks-per-ip", "0", "NFSPROV_AUTH_CHECKS_PER_IP"),
            ("--max-volume-gb", "0", "NFSPROV_MAX_VOLUME_GB"),
            ("--max-volume-gb", "1PB", "NFSPROV_MAX_VOLUME_GB"),
            ("--max-clients", "4097", "NFSPROV_MAX_CLIENTS"),
            ("--max-clients", "-3", "NFSPROV_MAX_CLIENTS"),
            (
                "--ldap-default-quota-gb",
                "-1",
                "NFSPROV_LDAP_DEFAULT_QUOTA_GB",
            ),
            ("--ldap-timeout-secs", "0", "NFSPROV_LDAP_TIMEOUT_SECS"),
            ("--rate-per-user", "0", "NFSPROV_RATE_PER_USER"),
            (
                "--rate-burst-per-user",
                "1.5",
                "NFSPROV_RATE_BURST_PER_USER",
            ),
            ("--rate-per-ip", "-1", "NFSPROV_RATE_PER_IP"),
            (
                "--trusted-proxies",
                "10.0.0.1,lb.example",
                "NFSPROV_TRUSTED_PROXIES",
            ),
            (
                "--trusted-proxies",
                "10.0.0.0/40",
                "NFSPROV_TRUSTED_PROXIES",
            ),
            (
                "--rate-burst-per-ip",
                "4294967296",
                "NFSPROV_RATE_BURST_PER_IP",
            ),
        ] {
            let arg = format!("{flag}={value}");
            let err = parse(&[&arg]).expect_err(&arg);
            assert!(err.contains(variable), "{arg}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{arg}: {err}");
        }
    }
}
