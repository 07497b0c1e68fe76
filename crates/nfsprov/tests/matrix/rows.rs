//! The rows of the backend matrix: every client form and every export option nfsprov accepts,
//! each with what a knfsd server (exportfs + etab) and an nfs-ganesha server (config parse +
//! D-Bus read-back, data access) must show for it. Written by hand from the programs' own
//! behaviour, never computed with nfsprov's renderer or validator.
//!
//! Shared by `tests/matrix.rs` (e2e: sends every row to real servers) and
//! `tests/matrix_table.rs` (fast tier: fails when a client form, an option keyword or a `sec=`
//! flavour of `nfsprov::spec` has no row here).
//!
//! In hosts and expected names, `{net}` is the first three octets of the ganesha test bed's
//! client network (its client hosts are `{net}.101`, `.102`, `.103`, named `clientN.test` in the
//! server's /etc/hosts); on the knfsd server, which no client reaches, it is `10.1.2`. `{net6}`
//! is the first three groups of the same network's IPv6 /64 (clients `{net6}::101`, ...; no
//! names); on the knfsd server it is `fd00:1:2`. `{NET6}` is `{net6}` in upper case.
//!
//! A client host in `access` is reached over IPv4 (`client1`) or over IPv6 (`client1/ipv6`).
//! The ganesha test bed's own /etc/netgroup (`NETGROUPS`) makes client1 a member of `ng`.
#![allow(dead_code)]

/// What ganesha holds for a client row.
#[derive(Debug, Clone, Copy)]
pub enum Held {
    /// Available; the export's live client entries (D-Bus `DisplayExport`) are exactly these.
    Entries(&'static [&'static str]),
    /// Refused up front (400, field `clients[0].host`) with a message holding this text.
    Refused(&'static str),
}

/// One client form.
#[derive(Debug, Clone, Copy)]
pub struct ClientRow {
    /// Which form this row proves (the completeness check matches it to `spec::ClientForm`).
    pub form: &'static str,
    /// The client as sent to the API (options `rw`).
    pub host: &'static str,
    /// knfsd: the client of the export's one etab line.
    pub etab: &'static str,
    pub ganesha: Held,
    /// ganesha data path over NFSv3 and v4: which client hosts may write (`true`) or are refused.
    pub access: &'static [(&'static str, bool)],
}

/// What ganesha does with an option row.
#[derive(Debug, Clone, Copy)]
pub enum Ganesha {
    /// Available; the live client entry as `common::nfs::LiveEntry::describe` spells it:
    /// access/squash, anonymous uid:gid, privileged port or not, auth flavours.
    Holds(&'static str),
    /// Refused up front (400, field `clients[0].options`) with a message holding this text.
    Refused(&'static str),
}

/// What writes from a ganesha client host show (volume mode 0777).
#[derive(Debug, Clone, Copy)]
pub enum Writes {
    /// Not tried for this row.
    Untried,
    /// A write is refused as read-only.
    ReadOnly,
    /// Owner (uid, gid) of a file written by root, and by uid 1000 gid 1001; whether a process
    /// that cannot bind a privileged port gets in (`insecure`) or not (`secure`, the default).
    Owners {
        root: (u32, u32),
        user: (u32, u32),
        unprivileged: bool,
    },
}

/// One set of export options.
#[derive(Debug, Clone, Copy)]
pub struct OptionRow {
    /// As sent to the API (a comma-separated string).
    pub options: &'static str,
    /// knfsd: tokens the export's etab line must hold ...
    pub etab: &'static [&'static str],
    /// ... and must not hold.
    pub not_etab: &'static [&'static str],
    pub ganesha: Ganesha,
    pub writes: Writes,
}

/// The live entry of every accepted client row (options `rw`) on ganesha.
pub const CLIENT_ROW_GANESHA: &str = "RW/Root_Squash anon 65534:65534 secure sec=sys";

const C1: (&str, bool) = ("client1", true);
const C2: (&str, bool) = ("client2", true);
const NOT_C1: (&str, bool) = ("client1", false);
const NOT_C2: (&str, bool) = ("client2", false);
const C1_6: (&str, bool) = ("client1/ipv6", true);
const C2_6: (&str, bool) = ("client2/ipv6", true);
const NOT_C1_6: (&str, bool) = ("client1/ipv6", false);
const NOT_C2_6: (&str, bool) = ("client2/ipv6", false);

/// The ganesha server's /etc/netgroup (netgroup(5)): client1 is in `ng`, client2 is not; the
/// empty fields are "-", as an empty one would match any host.
pub const NETGROUPS: &str = "ng (client1.test,-,)\nother (client3.test,-,)\n";

pub const CLIENT_ROWS: &[ClientRow] = &[
    ClientRow {
        form: "anyone",
        host: "*",
        etab: "*",
        ganesha: Held::Entries(&["*"]),
        access: &[C1, C2],
    },
    ClientRow {
        form: "host",
        host: "client1.test",
        etab: "client1.test",
        ganesha: Held::Entries(&["{net}.101/32"]),
        access: &[C1, NOT_C2],
    },
    ClientRow {
        form: "host (upper case)",
        host: "Client2.TEST",
        etab: "client2.test",
        ganesha: Held::Entries(&["{net}.102/32"]),
        access: &[C2, NOT_C1],
    },
    ClientRow {
        // Resolves on the knfsd server through a line the test adds to its /etc/hosts.
        form: "host starting with a digit",
        host: "1host.example",
        etab: "1host.example",
        ganesha: Held::Refused("starting with a digit"),
        access: &[],
    },
    ClientRow {
        form: "host spelled as a boolean",
        host: "on",
        etab: "on",
        ganesha: Held::Refused("as a boolean"),
        access: &[],
    },
    ClientRow {
        form: "wildcard *",
        host: "*1.test",
        etab: "*1.test",
        ganesha: Held::Entries(&["*1.test"]),
        access: &[C1, NOT_C2],
    },
    ClientRow {
        form: "wildcard ?",
        host: "c?ient2.test",
        etab: "c?ient2.test",
        ganesha: Held::Entries(&["c?ient2.test"]),
        access: &[C2, NOT_C1],
    },
    ClientRow {
        form: "wildcard ? first, no other wildcard",
        host: "?.lab",
        etab: "?.lab",
        ganesha: Held::Refused("as a host name"),
        access: &[],
    },
    ClientRow {
        form: "wildcard that could match an address",
        host: "*.*",
        etab: "*.*",
        ganesha: Held::Refused("could match addresses"),
        access: &[],
    },
    ClientRow {
        form: "ipv4",
        host: "{net}.101",
        etab: "{net}.101",
        ganesha: Held::Entries(&["{net}.101/32"]),
        access: &[C1, NOT_C2],
    },
    ClientRow {
        form: "ipv4 0.0.0.0",
        host: "0.0.0.0",
        etab: "0.0.0.0",
        ganesha: Held::Entries(&["0.0.0.0/32"]),
        access: &[NOT_C1],
    },
    ClientRow {
        form: "ipv4-net /0",
        host: "0.0.0.0/0",
        etab: "0.0.0.0/0",
        ganesha: Held::Refused("no /0 network"),
        access: &[],
    },
    ClientRow {
        form: "ipv4-net /8",
        host: "10.0.0.0/8",
        etab: "10.0.0.0/8",
        ganesha: Held::Entries(&["10.0.0.0/8"]),
        access: &[C1, C2],
    },
    ClientRow {
        form: "ipv4-net /24",
        host: "{net}.0/24",
        etab: "{net}.0/24",
        ganesha: Held::Entries(&["{net}.0/24"]),
        access: &[C1, C2],
    },
    ClientRow {
        form: "ipv4-net /32",
        host: "{net}.102/32",
        etab: "{net}.102/32",
        ganesha: Held::Entries(&["{net}.102/32"]),
        access: &[C2, NOT_C1],
    },
    ClientRow {
        form: "ipv4-net netmask",
        host: "{net}.0/255.255.255.0",
        etab: "{net}.0/24",
        ganesha: Held::Entries(&["{net}.0/24"]),
        access: &[C1, C2],
    },
    ClientRow {
        form: "ipv4-net host bits set",
        host: "{net}.101/31",
        etab: "{net}.101/31",
        ganesha: Held::Entries(&["{net}.100/31"]),
        access: &[C1, NOT_C2],
    },
    ClientRow {
        // Matched on the address family too: client1 over IPv4 is not {net6}::101.
        form: "ipv6",
        host: "{net6}::101",
        etab: "{net6}::101",
        ganesha: Held::Entries(&["{net6}::101/128"]),
        access: &[C1_6, NOT_C2_6, NOT_C1],
    },
    ClientRow {
        // ganesha spells one zero group "::", exports(5) and nfsprov do not (RFC 5952).
        form: "ipv6 one zero group",
        host: "1:0:2:3:4:5:6:7",
        etab: "1:0:2:3:4:5:6:7",
        ganesha: Held::Entries(&["1::2:3:4:5:6:7/128"]),
        access: &[],
    },
    ClientRow {
        // ganesha holds `::ffff:{net}.101` when written by hand, and it matches neither
        // client1 over IPv4 (ganesha compares an IPv4 peer of its dual-stack socket as IPv4)
        // nor any IPv6 peer: `ganesha_ipv4_mapped_and_zero_prefix_on_the_real_server` in
        // tests/matrix.rs. So nfsprov refuses it.
        form: "ipv6 ipv4-mapped",
        host: "::ffff:10.0.0.1",
        etab: "::ffff:10.0.0.1",
        ganesha: Held::Refused("IPv4-mapped"),
        access: &[],
    },
    ClientRow {
        form: "ipv6-net /64",
        host: "{net6}::/64",
        etab: "{net6}::/64",
        ganesha: Held::Entries(&["{net6}::/64"]),
        access: &[C1_6, C2_6, NOT_C1],
    },
    ClientRow {
        // Sent in upper case; both servers hold it in lower case.
        form: "ipv6-net host bits set",
        host: "{NET6}::5/64",
        etab: "{net6}::5/64",
        ganesha: Held::Entries(&["{net6}::/64"]),
        access: &[C1_6, C2_6, NOT_C1],
    },
    ClientRow {
        form: "ipv6-net /120",
        host: "fd00:2::/120",
        etab: "fd00:2::/120",
        ganesha: Held::Refused("prefix lengths 1 to 99"),
        access: &[],
    },
    ClientRow {
        form: "ipv6-net /128",
        host: "{net6}::102/128",
        etab: "{net6}::102/128",
        ganesha: Held::Entries(&["{net6}::102/128"]),
        access: &[C2_6, NOT_C1_6],
    },
    ClientRow {
        form: "ipv6-net ::/0",
        host: "::/0",
        etab: "::/0",
        ganesha: Held::Refused("prefix lengths 1 to 99"),
        access: &[],
    },
    ClientRow {
        // ganesha asks glibc's innetgr for the name the client's address has in /etc/hosts.
        form: "netgroup",
        host: "@ng",
        etab: "@ng",
        ganesha: Held::Entries(&["ng"]),
        access: &[C1, NOT_C2],
    },
    ClientRow {
        form: "netgroup starting with a digit",
        host: "@0group",
        etab: "@0group",
        ganesha: Held::Refused("starting with a letter"),
        access: &[],
    },
];

/// hootie's `allowed_hosts`: several clients in one string, separated by a space and a comma
/// (options `rw,no_root_squash`, so root may write into the root-owned directory).
pub const HOOTIE_ALLOWED_HOSTS: &str = "{net}.101 client2.test,*.example.com";
/// knfsd: the clients of the export's etab lines, in any order.
pub const HOOTIE_ETAB: &[&str] = &["{net}.101", "client2.test", "*.example.com"];
/// ganesha: the live client entries, in order.
pub const HOOTIE_GANESHA: &[&str] = &["{net}.101/32", "{net}.102/32", "*.example.com"];
/// ganesha data path: client1 and client2 by address and name; client3 is refused.
pub const HOOTIE_ACCESS: &[(&str, bool)] = &[C1, C2, ("client3", false)];

/// exports(5)'s default anonuid/anongid; ganesha's own would be 4294967294.
const ROOT_SQUASHED: Writes = Writes::Owners {
    root: (65534, 65534),
    user: (1000, 1001),
    unprivileged: false,
};

pub const OPTION_ROWS: &[OptionRow] = &[
    OptionRow {
        options: "",
        // nfsprov adds sync and no_subtree_check; the rest are exportfs's defaults.
        etab: &[
            "ro",
            "sync",
            "wdelay",
            "hide",
            "nocrossmnt",
            "secure",
            "root_squash",
            "no_all_squash",
            "no_subtree_check",
            "secure_locks",
            "anonuid=65534",
            "anongid=65534",
            "sec=sys",
        ],
        not_etab: &["rw"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::ReadOnly,
    },
    OptionRow {
        options: "rw",
        etab: &["rw", "sync", "no_subtree_check", "root_squash"],
        not_etab: &["ro"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        options: "ro",
        etab: &["ro"],
        not_etab: &["rw"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::ReadOnly,
    },
    OptionRow {
        options: "rw,secure",
        etab: &["rw", "secure"],
        not_etab: &["insecure"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        // libnfs binds a privileged port as root, so writes work either way.
        options: "rw,insecure",
        etab: &["rw", "insecure"],
        not_etab: &["secure"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 insecure sec=sys"),
        writes: Writes::Owners {
            root: (65534, 65534),
            user: (1000, 1001),
            unprivileged: true,
        },
    },
    OptionRow {
        options: "rw,async",
        etab: &["rw", "async"],
        not_etab: &["sync"],
        ganesha: Ganesha::Refused("'async'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "rw,sync",
        etab: &["rw", "sync"],
        not_etab: &["async"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        options: "wdelay",
        etab: &["wdelay"],
        not_etab: &["no_wdelay"],
        ganesha: Ganesha::Refused("'wdelay'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "no_wdelay",
        etab: &["no_wdelay"],
        not_etab: &["wdelay"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "hide",
        etab: &["hide"],
        not_etab: &["nohide"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "nohide",
        etab: &["nohide"],
        not_etab: &["hide"],
        ganesha: Ganesha::Refused("'nohide'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "crossmnt",
        etab: &["crossmnt"],
        not_etab: &["nocrossmnt"],
        ganesha: Ganesha::Refused("'crossmnt'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "nocrossmnt",
        etab: &["nocrossmnt"],
        not_etab: &["crossmnt"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "subtree_check",
        etab: &["subtree_check"],
        not_etab: &["no_subtree_check"],
        ganesha: Ganesha::Refused("'subtree_check'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "no_subtree_check",
        etab: &["no_subtree_check"],
        not_etab: &["subtree_check"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "rw,root_squash",
        etab: &["rw", "root_squash"],
        not_etab: &["no_root_squash"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        options: "rw,no_root_squash",
        etab: &["rw", "no_root_squash"],
        not_etab: &["root_squash"],
        ganesha: Ganesha::Holds("RW/No_Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Owners {
            root: (0, 0),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,all_squash",
        etab: &["rw", "all_squash"],
        not_etab: &["no_all_squash"],
        ganesha: Ganesha::Holds("RW/All_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Owners {
            root: (65534, 65534),
            user: (65534, 65534),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,no_root_squash,no_all_squash",
        etab: &["rw", "no_root_squash", "no_all_squash"],
        not_etab: &["all_squash", "root_squash"],
        ganesha: Ganesha::Holds("RW/No_Root_Squash anon 65534:65534 secure sec=sys"),
        writes: Writes::Owners {
            root: (0, 0),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,root_squash,anonuid=4321,anongid=4322",
        etab: &["rw", "root_squash", "anonuid=4321", "anongid=4322"],
        not_etab: &["anonuid=65534"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 4321:4322 secure sec=sys"),
        writes: Writes::Owners {
            root: (4321, 4322),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,all_squash,anonuid=2000,anongid=2001",
        etab: &["rw", "all_squash", "anonuid=2000", "anongid=2001"],
        not_etab: &[],
        ganesha: Ganesha::Holds("RW/All_Squash anon 2000:2001 secure sec=sys"),
        writes: Writes::Owners {
            root: (2000, 2001),
            user: (2000, 2001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,anonuid=0,anongid=0",
        etab: &["anonuid=0", "anongid=0"],
        not_etab: &["anonuid=65534"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 0:0 secure sec=sys"),
        writes: Writes::Owners {
            root: (0, 0),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "rw,anonuid=2147483647,anongid=2147483647",
        etab: &["anonuid=2147483647", "anongid=2147483647"],
        not_etab: &[],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 2147483647:2147483647 secure sec=sys"),
        writes: Writes::Owners {
            root: (2147483647, 2147483647),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        // exportfs prints ids with %d: 2147483648 is -2147483648, 4294967294 is -2.
        options: "rw,anonuid=2147483648,anongid=4294967294",
        etab: &["anonuid=-2147483648", "anongid=-2"],
        not_etab: &[],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 2147483648:4294967294 secure sec=sys"),
        writes: Writes::Owners {
            root: (2147483648, 4294967294),
            user: (1000, 1001),
            unprivileged: false,
        },
    },
    OptionRow {
        options: "secure_locks",
        etab: &["secure_locks"],
        not_etab: &["insecure_locks"],
        ganesha: Ganesha::Refused("'secure_locks'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "auth_nlm",
        etab: &["secure_locks"],
        not_etab: &["insecure_locks"],
        ganesha: Ganesha::Refused("'secure_locks'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "insecure_locks",
        etab: &["insecure_locks"],
        not_etab: &["secure_locks"],
        ganesha: Ganesha::Refused("'insecure_locks'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "no_auth_nlm",
        etab: &["insecure_locks"],
        not_etab: &["secure_locks"],
        ganesha: Ganesha::Refused("'insecure_locks'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "rw,sec=sys",
        etab: &["sec=sys"],
        not_etab: &[],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        options: "sec=krb5",
        etab: &["sec=krb5"],
        not_etab: &["sec=sys"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=krb5"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "sec=krb5i",
        etab: &["sec=krb5i"],
        not_etab: &["sec=sys"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=krb5i"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "sec=krb5p",
        etab: &["sec=krb5p"],
        not_etab: &["sec=sys"],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=krb5p"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "rw,sec=sys:krb5",
        etab: &["sec=sys:krb5"],
        not_etab: &["sec=sys"],
        ganesha: Ganesha::Holds("RW/Root_Squash anon 65534:65534 secure sec=sys:krb5"),
        writes: ROOT_SQUASHED,
    },
    OptionRow {
        options: "sec=krb5p:krb5i:krb5:sys",
        etab: &["sec=krb5p:krb5i:krb5:sys"],
        not_etab: &[],
        ganesha: Ganesha::Holds("RO/Root_Squash anon 65534:65534 secure sec=sys:krb5:krb5i:krb5p"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "sec=krb5i:krb5p,ro,all_squash",
        etab: &["ro", "all_squash", "sec=krb5i:krb5p"],
        not_etab: &["sec=sys"],
        ganesha: Ganesha::Holds("RO/All_Squash anon 65534:65534 secure sec=krb5i:krb5p"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "nordirplus",
        etab: &["nordirplus"],
        not_etab: &[],
        ganesha: Ganesha::Refused("'nordirplus'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "pnfs",
        etab: &["pnfs"],
        not_etab: &["no_pnfs"],
        ganesha: Ganesha::Refused("'pnfs'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "no_pnfs",
        etab: &["no_pnfs"],
        not_etab: &["pnfs"],
        ganesha: Ganesha::Refused("'no_pnfs'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "security_label",
        etab: &["security_label"],
        not_etab: &[],
        ganesha: Ganesha::Refused("'security_label'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "acl",
        etab: &["acl"],
        not_etab: &["no_acl"],
        ganesha: Ganesha::Refused("'acl'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "no_acl",
        etab: &["no_acl"],
        not_etab: &["acl"],
        ganesha: Ganesha::Refused("'no_acl'"),
        writes: Writes::Untried,
    },
    OptionRow {
        options: "rw,insecure,no_root_squash,no_wdelay,hide,nocrossmnt,no_subtree_check,sync,sec=sys",
        etab: &[
            "rw",
            "insecure",
            "no_root_squash",
            "no_wdelay",
            "hide",
            "nocrossmnt",
            "no_subtree_check",
            "sync",
            "sec=sys",
        ],
        not_etab: &["secure", "root_squash", "wdelay"],
        ganesha: Ganesha::Holds("RW/No_Root_Squash anon 65534:65534 insecure sec=sys"),
        writes: Writes::Owners {
            root: (0, 0),
            user: (1000, 1001),
            unprivileged: true,
        },
    },
];
