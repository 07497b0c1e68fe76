#!/usr/bin/env bash
# shellcheck disable=SC2012  # the ls -l listings are meant for people to read
# A guided tour of nfsprov against two simulated NFS servers on this machine.
#
#   sudo scripts/demo.sh
#
# It builds nfsprov, starts a test bed (two sshd servers in private mount namespaces, each with
# exportfs), registers them, adds two users, runs the API on 127.0.0.1 and walks through the
# hootie API and the native API, showing each request, each response, and what changed on the
# server. Everything lives in a temporary directory that is removed at the end, also on failure.
# Exits non-zero as soon as a response or a server-side effect is not the expected one.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# --- output helpers --------------------------------------------------------------------------
if [ -t 1 ]; then
    B=$'\e[1m' DIM=$'\e[2m' RED=$'\e[31m' GRN=$'\e[32m' CYN=$'\e[36m' YLW=$'\e[33m' R=$'\e[0m'
else
    B='' DIM='' RED='' GRN='' CYN='' YLW='' R=''
fi
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$R"; }
note() { printf '%s%s%s\n' "$DIM" "$*" "$R"; }
indent() { sed 's/^/    /'; }
fail() {
    printf '%sFAILED: %s%s\n' "$RED$B" "$*" "$R" >&2
    exit 1
}
ok() { printf '%s  ok: %s%s\n' "$GRN" "$*" "$R"; }

# --- prerequisites ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || fail "the test bed needs root: run  sudo $0"

section "Setup"
bash "$REPO/scripts/setup.sh"

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
find_cargo || true

section "Build"
echo "==> cargo build --release -p nfsprov -p nfsprov-testbed"
cargo build --release --quiet -p nfsprov -p nfsprov-testbed
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/nfsprov"
TBBIN="${CARGO_TARGET_DIR:-$REPO/target}/release/nfsprov-testbed"
[ -x "$BIN" ] || fail "no binary at $BIN"
[ -x "$TBBIN" ] || fail "no binary at $TBBIN"

# --- work dir and cleanup --------------------------------------------------------------------
W=$(mktemp -d /tmp/nfsprov-demo.XXXXXX)
TB="$W/testbed"
GTB="$W/ganesha-testbed"
export NFSPROV_DATA_DIR="$W/data"
export NFSPROV_LOG=warn
SERVE_PID=""
TB_UP=0

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && [ -s "$W/serve.log" ]; then
        printf '\n%s--- last lines of the API server log ---%s\n' "$YLW" "$R" >&2
        tail -n 30 "$W/serve.log" >&2
    fi
    printf '\n%s== Cleanup ==%s\n' "$B" "$R"
    if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
        echo "stopped nfsprov serve (pid $SERVE_PID)"
    fi
    if [ "$TB_UP" -eq 1 ] || [ -e "$TB/testbed.json" ]; then
        "$TBBIN" down --dir "$TB" --remove && echo "test bed stopped and removed"
    fi
    if [ -e "$GTB/testbed.json" ]; then
        "$TBBIN" down --dir "$GTB" --remove && echo "ganesha test bed (namespaces, bridge) stopped and removed"
    fi
    rm -rf "$W" && echo "removed $W"
    if [ "$rc" -eq 0 ]; then
        printf '\n%sDemo finished: every step gave the expected result.%s\n' "$GRN$B" "$R"
    else
        printf '\n%sDemo failed (exit %s).%s\n' "$RED$B" "$rc" "$R" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- test bed, registration, users ------------------------------------------------------------
section "Two simulated NFS servers (sshd + exportfs in private mount namespaces)"
echo "\$ nfsprov-testbed up 2 --dir $TB"
TB_UP=1
"$TBBIN" up 2 --dir "$TB" | indent
echo "\$ nfsprov-testbed register --dir $TB --data-dir \$NFSPROV_DATA_DIR --nfsprov $BIN --capacity-gb 100"
"$TBBIN" register --dir "$TB" --data-dir "$NFSPROV_DATA_DIR" --nfsprov "$BIN" --capacity-gb 100 | indent

SRV1="$TB/srv1"
SRV2="$TB/srv2"
FOREIGN_BEFORE=$(cat "$SRV1/etc_exports")

section "Users (nfsprov user add)"
ADMIN_PW='admin-demo-pass'
JOHN_PW='johndoe-demo-pass'
echo "\$ nfsprov user add admin --admin"
printf '%s\n' "$ADMIN_PW" | "$BIN" user add admin --admin | indent
echo "\$ nfsprov user add johndoe --quota-gb 10"
printf '%s\n' "$JOHN_PW" | "$BIN" user add johndoe --quota-gb 10 | indent

# --- API server -------------------------------------------------------------------------------
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
PORT=""
for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! port_in_use "$p"; then PORT=$p; break; fi
done
[ -n "$PORT" ] || fail "found no free port on 127.0.0.1"
BASE="http://127.0.0.1:$PORT"

section "API server"
echo "\$ nfsprov serve --listen 127.0.0.1:$PORT &    (log: $W/serve.log)"
NO_COLOR=1 NFSPROV_LOG=info "$BIN" serve --listen "127.0.0.1:$PORT" >"$W/serve.log" 2>&1 &
SERVE_PID=$!
for i in $(seq 1 150); do
    if curl -fsS -o /dev/null "$BASE/api/v1/health" 2>/dev/null; then break; fi
    kill -0 "$SERVE_PID" 2>/dev/null || fail "nfsprov serve exited during startup"
    [ "$i" -lt 150 ] || fail "nfsprov serve did not answer /api/v1/health within 15 s"
    sleep 0.1
done
echo "GET /api/v1/health -> $(curl -sS "$BASE/api/v1/health")"

# --- HTTP helper ------------------------------------------------------------------------------
reason() {
    case "$1" in
        200) echo OK ;; 201) echo Created ;; 202) echo Accepted ;; 204) echo "No Content" ;;
        400) echo "Bad Request" ;; 401) echo Unauthorized ;; 403) echo Forbidden ;;
        404) echo "Not Found" ;; 409) echo Conflict ;; 500) echo "Internal Server Error" ;;
        502) echo "Bad Gateway" ;; *) echo "" ;;
    esac
}

# api EXPECTED_STATUS METHOD PATH [USER [JSON_BODY]]  -> prints exchange; sets $BODY
BODY=""
api() {
    local expect=$1 method=$2 path=$3 user=${4:-} data=${5:-}
    local args=(-sS -o "$W/resp" -w '%{http_code}' -X "$method")
    local who="no auth"
    case "$user" in
        johndoe) args+=(-u "johndoe:$JOHN_PW"); who="as johndoe" ;;
        admin) args+=(-u "admin:$ADMIN_PW"); who="as admin" ;;
    esac
    printf '\n%s> %s %s%s  %s(%s)%s\n' "$CYN$B" "$method" "$path" "$R" "$DIM" "$who" "$R"
    if [ -n "$data" ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$data")
        jq . <<<"$data" | indent
    fi
    local status
    status=$(curl "${args[@]}" "$BASE$path") || fail "curl $method $path failed"
    BODY=$(cat "$W/resp")
    local color=$GRN
    [ "$status" = "$expect" ] || color=$RED
    printf '%s< %s %s%s\n' "$color$B" "$status" "$(reason "$status")" "$R"
    if [ -n "$BODY" ]; then
        jq . <<<"$BODY" 2>/dev/null | indent || printf '%s\n' "$BODY" | indent
    fi
    [ "$status" = "$expect" ] || fail "$method $path: expected HTTP $expect, got $status"
}

# expect_json JQ_FILTER DESCRIPTION: the last response body must satisfy the filter
expect_json() {
    jq -e "$1" >/dev/null <<<"$BODY" || fail "response: expected $2"
}

# show_server SRV_DIR INSIDE_PATH: the managed exports file, matching etab lines, the directory
show_server() {
    local dir=$1 inside=$2 srv
    srv=$(basename "$dir")
    local host_path="$dir/data/${inside#/srv/nfsprov/}"
    printf '%s  on %s:%s\n' "$YLW" "$srv" "$R"
    echo "    /etc/exports.d/nfsprov.exports:"
    if [ -f "$dir/exports.d/nfsprov.exports" ]; then
        sed 's/^/      | /' "$dir/exports.d/nfsprov.exports"
    else
        echo "      (no such file)"
    fi
    echo "    /var/lib/nfs/etab, lines for $inside:"
    etab_lines "$dir" "$inside" | sed 's/^/      | /'
    [ -n "$(etab_lines "$dir" "$inside")" ] || echo "      (none)"
    echo "    directory:"
    if [ -e "$host_path" ]; then
        echo "      $(ls -ld "$host_path" | sed "s#$dir/data#/srv/nfsprov#")"
    else
        echo "      $inside: (does not exist)"
    fi
}
etab_lines() { grep -F "$2"$'\t' "$1/nfs/etab" || true; }
# etab_opts SRV_DIR INSIDE_PATH HOST: the export options etab shows for that client ("" if none)
etab_opts() {
    etab_lines "$1" "$2" | awk -F'\t' -v h="$3" 'index($2, h "(") == 1 { print substr($2, length(h) + 1) }'
}
has_opts() { [[ ",$(etab_opts "$1" "$2" "$3" | tr -d '()')," == *",$4,"* ]]; }

# ==============================================================================================
section "1. hootie API: list the root paths (no authentication needed)"
api 200 GET /api/v1.0/rootpaths/
expect_json 'length == 2 and .[0].pk == 1 and (.[0].server_path | endswith(":/srv/nfsprov/pool1"))' \
    "two root paths"
note "  (both simulated servers are reached at 127.0.0.1, so pk 1 is srv1's pool1 and pk 2 is srv2's)"

# ----------------------------------------------------------------------------------------------
section "2. hootie API: johndoe creates a volume, exactly as in hootie's README"
HOME_DIR=/srv/nfsprov/pool1/_my_home_directory
api 201 POST /api/v1.0/volumes/ johndoe \
    '{"options": "ro,sync", "root_path": 1, "sub_path": "_my_home_directory", "size_GB": 2, "allowed_hosts": "192.168.20.2"}'
expect_json '.error == "None"' '"error": "None"'
HOOTIE_PK=$(jq -r .pk <<<"$BODY")
show_server "$SRV1" "$HOME_DIR"
if ! { has_opts "$SRV1" "$HOME_DIR" 192.168.20.2 ro && has_opts "$SRV1" "$HOME_DIR" 192.168.20.2 sync; }; then
    fail "$HOME_DIR is not exported to 192.168.20.2 (ro,sync) in srv1's etab"
fi
ok "exported to 192.168.20.2 read-only by the time the 201 arrived"
echo "hello from johndoe" >"$SRV1/data/pool1/_my_home_directory/notes.txt"
note "  (an NFS client writes notes.txt into the volume)"

# ----------------------------------------------------------------------------------------------
section "3. hootie API: johndoe lists his volumes"
api 200 GET /api/v1.0/volumes/ johndoe
expect_json "length == 1 and .[0].pk == $HOOTIE_PK and .[0].fullpath == \"$HOME_DIR\"" \
    "one volume at $HOME_DIR"

# ----------------------------------------------------------------------------------------------
section "4. native API: a volume on srv2 with two clients, each with its own options"
WEB_DIR=/srv/nfsprov/pool1/projects/web
api 201 POST '/api/v1/volumes?wait=true' johndoe \
    '{"root_path_id": 2, "sub_path": "projects/web", "size_gb": 3, "clients": [{"host": "10.20.0.0/16", "options": "rw,sync"}, {"host": "*.lab.test", "options": "ro"}]}'
expect_json '.state == "available"' '"state": "available"'
WEB_ID=$(jq -r .id <<<"$BODY")
show_server "$SRV2" "$WEB_DIR"
if ! { has_opts "$SRV2" "$WEB_DIR" 10.20.0.0/16 rw && has_opts "$SRV2" "$WEB_DIR" 10.20.0.0/16 sync; }; then
    fail "10.20.0.0/16 (rw,sync) missing from srv2's etab"
fi
has_opts "$SRV2" "$WEB_DIR" '*.lab.test' ro || fail "*.lab.test (ro) missing from srv2's etab"
ok "both clients exported with their own options"

# ----------------------------------------------------------------------------------------------
section "5. native API: change who may mount it"
note "The root path's export policy (the defaults) keeps root squash on for ordinary users:"
api 403 PATCH "/api/v1/volumes/$WEB_ID?wait=true" johndoe \
    '{"clients": [{"host": "10.20.30.0/24", "options": "rw,sync,no_root_squash"}, {"host": "*.lab.test", "options": "rw"}]}'
expect_json '.error.field == "clients[0].options" and (.error.message | test("no_root_squash"))' \
    "a 403 naming clients[0].options and no_root_squash"
api 200 PATCH "/api/v1/volumes/$WEB_ID?wait=true" johndoe \
    '{"clients": [{"host": "10.20.30.0/24", "options": "rw,sync"}, {"host": "*.lab.test", "options": "rw"}]}'
expect_json '.state == "available"' '"state": "available"'
show_server "$SRV2" "$WEB_DIR"
if ! { has_opts "$SRV2" "$WEB_DIR" 10.20.30.0/24 rw && has_opts "$SRV2" "$WEB_DIR" 10.20.30.0/24 root_squash; }; then
    fail "10.20.30.0/24 (rw,root_squash) missing from srv2's etab"
fi
has_opts "$SRV2" "$WEB_DIR" '*.lab.test' rw || fail "*.lab.test is not rw in srv2's etab"
if [ -n "$(etab_opts "$SRV2" "$WEB_DIR" 10.20.0.0/16)" ]; then fail "10.20.0.0/16 is still exported"; fi
ok "etab follows: 10.20.0.0/16 gone, 10.20.30.0/24 added, *.lab.test now read-write"

# ----------------------------------------------------------------------------------------------
section "6. Over quota: johndoe (quota 10 GB, 5 GB in use) asks for 20 GB"
api 409 POST /api/v1/volumes johndoe \
    '{"root_path_id": 1, "sub_path": "big", "size_gb": 20, "clients": [{"host": "10.0.0.0/24"}]}'
expect_json '.error.code == "quota_exceeded" and (.error.message | test("quota by 15 GB"))' \
    "a quota_exceeded error saying by how much"
[ ! -e "$SRV1/data/pool1/big" ] || fail "a directory was created for the refused volume"
ok "refused before anything was recorded or created"

# ----------------------------------------------------------------------------------------------
section "7. A bad request: a sub_path that climbs out of the root path"
api 400 POST /api/v1/volumes johndoe \
    '{"root_path_id": 1, "sub_path": "../etc", "size_gb": 1, "clients": [{"host": "*"}]}'
expect_json '.error.field == "sub_path"' 'the error to name the field sub_path'

# ----------------------------------------------------------------------------------------------
section "8. hootie API: delete the home directory volume"
api 204 DELETE "/api/v1.0/volumes/$HOOTIE_PK/" johndoe
note "  (hootie's DELETE answers at once; waiting for srv1 to apply it)"
for i in $(seq 1 100); do
    state=$(curl -sS -u "johndoe:$JOHN_PW" "$BASE/api/v1/volumes/$HOOTIE_PK" | jq -r .state)
    [ "$state" = deleted ] && break
    [ "$i" -lt 100 ] || fail "volume $HOOTIE_PK still $state after 10 s"
    sleep 0.1
done
show_server "$SRV1" "$HOME_DIR"
if [ -n "$(etab_lines "$SRV1" "$HOME_DIR")" ]; then fail "$HOME_DIR is still in srv1's etab"; fi
TRASH1="$SRV1/data/pool1/.nfsprov-trash/$HOOTIE_PK"
[ "$(cat "$TRASH1/notes.txt" 2>/dev/null)" = "hello from johndoe" ] ||
    fail "notes.txt not retained under .nfsprov-trash/$HOOTIE_PK"
echo "    data retained in the trash:"
(cd "$SRV1/data" && ls -lR "pool1/.nfsprov-trash/$HOOTIE_PK" | sed -e '/^total/d' -e '/^$/d' -e 's#^pool1#/srv/nfsprov/pool1#' -e 's/^/      /')
echo "      notes.txt: $(cat "$TRASH1/notes.txt")"
ok "export removed, data kept under /srv/nfsprov/pool1/.nfsprov-trash/$HOOTIE_PK"

# ----------------------------------------------------------------------------------------------
section "9. native API: delete the projects/web volume and wait for it"
api 200 DELETE "/api/v1/volumes/$WEB_ID?wait=true" johndoe
expect_json '.state == "deleted"' '"state": "deleted"'
show_server "$SRV2" "$WEB_DIR"
if [ -n "$(etab_lines "$SRV2" "$WEB_DIR")" ]; then fail "$WEB_DIR is still in srv2's etab"; fi
TRASH2="$SRV2/data/pool1/.nfsprov-trash/$WEB_ID"
[ -d "$TRASH2" ] || fail "data not retained under .nfsprov-trash/$WEB_ID"
echo "    data retained in the trash:"
echo "      $(ls -ld "$TRASH2" | sed "s#$SRV2/data#/srv/nfsprov#")"
ok "export removed, data kept under /srv/nfsprov/pool1/.nfsprov-trash/$WEB_ID"

# ----------------------------------------------------------------------------------------------
section "10. What nfsprov did not write is untouched"
echo "    srv1 /etc/exports:"
sed 's/^/      | /' "$SRV1/etc_exports"
[ "$(cat "$SRV1/etc_exports")" = "$FOREIGN_BEFORE" ] || fail "srv1's /etc/exports changed"
echo "    srv1 /var/lib/nfs/etab, lines for /srv/nfsprov/foreign:"
etab_lines "$SRV1" /srv/nfsprov/foreign | sed 's/^/      | /'
[ -n "$(etab_lines "$SRV1" /srv/nfsprov/foreign)" ] || fail "the foreign export vanished from srv1's etab"
ok "/etc/exports byte-for-byte as before, and its export still active"

api 200 GET /api/v1/users admin
expect_json '(.[] | select(.username == "johndoe") | .used_gb) == 0' "johndoe's quota released"
ok "johndoe's 5 GB were released by the deletes"

# ----------------------------------------------------------------------------------------------
section "11. The real NFS data path: an nfs-ganesha server and two client hosts"
note "Each in its own network namespace on a private bridge; files go over NFS with libnfs."
echo "\$ nfsprov-testbed up 1 --ganesha-clients 2 --dir $GTB"
"$TBBIN" up 1 --ganesha-clients 2 --dir "$GTB" | indent
echo "\$ nfsprov-testbed register --dir $GTB --data-dir \$NFSPROV_DATA_DIR --nfsprov $BIN --name-prefix g --capacity-gb 100"
"$TBBIN" register --dir "$GTB" --data-dir "$NFSPROV_DATA_DIR" --nfsprov "$BIN" --name-prefix g --capacity-gb 100 | indent
NFS_ADDR=$(jq -r '.servers[0].nfs_addr' "$GTB/testbed.json")
C1_NS=$(jq -r '.clients[0].netns' "$GTB/testbed.json")
C1_ADDR=$(jq -r '.clients[0].addr' "$GTB/testbed.json")
C2_NS=$(jq -r '.clients[1].netns' "$GTB/testbed.json")
C2_ADDR=$(jq -r '.clients[1].addr' "$GTB/testbed.json")
G_RP=$(curl -sS "$BASE/api/v1.0/rootpaths/" | jq -r --arg a "$NFS_ADDR" '.[] | select(.server_path | startswith($a + ":")) | .pk')
[ -n "$G_RP" ] || fail "the ganesha root path was not registered"
# nfsprov picks up servers registered through the CLI within a few seconds.
for _ in $(seq 1 100); do
    st=$(curl -sS -u "admin:$ADMIN_PW" "$BASE/api/v1/servers" | jq -r '.[] | select(.name == "gsrv1") | .status')
    [ "$st" = reachable ] && break
    sleep 0.1
done
# The files below are written as root from client1: the admin allows no_root_squash here.
echo "\$ nfsprov rootpath policy $G_RP '{\"allowed_options\": [\"no_root_squash\"]}'"
"$BIN" rootpath policy "$G_RP" '{"allowed_options": ["no_root_squash"]}' | indent
api 201 POST "/api/v1/volumes?wait=true" johndoe \
    "{\"root_path_id\":$G_RP,\"sub_path\":\"team-data\",\"size_gb\":2,\"clients\":[{\"host\":\"$C1_ADDR\",\"options\":\"rw,no_root_squash\"}]}"
expect_json '.state == "available"' '"state": "available"'
echo "    gsrv1 /etc/ganesha/nfsprov.conf (applied live with SIGHUP, verified over ganesha's D-Bus):"
sed 's/^/      | /' "$GTB/srv1/ganesha_etc/nfsprov.conf"
URL="nfs://$NFS_ADDR/srv/nfsprov/pool1/team-data/hello.txt?version=3"
echo "hello over NFS from client1" > "$W/hello.txt"
echo
echo "\$ ip netns exec <client1 $C1_ADDR> nfs-cp hello.txt $URL"
ip netns exec "$C1_NS" nfs-cp "$W/hello.txt" "$URL" 2>&1 | indent || fail "client1 could not write"
echo "\$ ip netns exec <client1 $C1_ADDR> nfs-cat $URL"
ip netns exec "$C1_NS" nfs-cat "$URL" | indent
[ "$(cat "$GTB/srv1/data/pool1/team-data/hello.txt")" = "hello over NFS from client1" ] || fail "file not on the server"
ok "client1 (listed rw) wrote the file; it is on the server's disk"
echo "\$ ip netns exec <client2 $C2_ADDR> nfs-cat $URL"
if ip netns exec "$C2_NS" nfs-cat "$URL" >"$W/c2.out" 2>&1; then
    fail "client2 (not listed) could read the volume"
fi
indent <"$W/c2.out"
grep -q MNT3ERR_ACCES "$W/c2.out" || fail "client2 was not refused with MNT3ERR_ACCES"
ok "client2 (not listed) is refused by the server"
