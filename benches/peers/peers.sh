#!/usr/bin/env bash
# Side-by-side benchmark of Warden and its peers with dnsperf (run by hand, never by CI;
# see benches/peers/README.md).
#
# Every server gets the same 1,000,000-name block list (converted to its own syntax; each
# blocks the listed names AND their subdomains), forwards everything else to the same
# loopback stub upstream (examples/stub_upstream.rs), runs with one server thread pinned
# to one core (dnsperf on the other), and is measured in turn, the order rotating from
# one repeat to the next:
#   - start-up with the list: process start until it gives the block answer for a listed
#     name (dig polled every ~20 ms);
#   - RSS (VmRSS from /proc) after loading and after the runs;
#   - queries/s, saturating: (a) 100% blocked listed names, (b) blocked subdomains
#     (x.<listed>), (c) allowed names answered from cache (after a warm-up pass);
#   - at a fixed rate (dnsperf -Q $RATE for $FIXED_DURATION s), for (a) and (c): p50/p99
#     latency (from dnsperf -v per-query output; a lost query counts as infinitely slow)
#     and server CPU time per query (utime+stime delta from /proc/PID/stat / queries
#     answered);
#   - the echo ceiling: dnsperf against a bare UDP echo server (a 20-line C program built
#     with cc into the work dir; python3 fallback when there is no cc), same core.
# Prints one table with each server's medians over $REPEATS runs, Warden's ratio to each
# peer, and pass/miss for the targets of issue #8. With "warden-before" among the peers (an
# older Warden binary, WARDEN_BEFORE_BIN, same config, audit on) it also prints the
# after/before ratios of the query-path figures and pass/miss for "within 3%" (issue #14).
#
# Peers: unbound, dnsmasq, dnsdist (Debian packages, installed with apt-get if missing)
# and hickory-dns with the blocklist store (cargo install into $HICKORY_ROOT, a folder
# outside the repo, unless HICKORY_BIN is given). Only 127.0.0.1 is used; the only other
# network traffic is the installs.
#
# Usage: benches/peers/peers.sh 2>&1 | tee peers.log
# Environment (all optional):
#   RULES=1000000            names in the block list (real names from ../shared, topped up
#                            with synthetic ones)
#   QUERIES=100000           distinct blocked names queried (and as many x.<name>)
#   DURATION=10              seconds per saturating dnsperf run
#   RATE=50000 FIXED_DURATION=20   the fixed-rate runs (latency, CPU per query)
#   REPEATS=3                runs of every server (medians reported), alternating servers
#   PEERS="warden unbound dnsmasq dnsdist hickory"   subset/order; "warden-noaudit" adds
#                            Warden with its audit log off, "warden-before" the binary
#                            WARDEN_BEFORE_BIN; the echo ceiling always runs
#   CLIENTS=8 OUTSTANDING=100  dnsperf -c and -q
#   SERVER_CPU=1 CLIENT_CPU=0  cores for the servers and for dnsperf + the stub upstream
#   PORT_BASE=5450           servers on PORT_BASE+1.., the stub on PORT_BASE+9
#   WARDEN_BIN STUB_BIN      prebuilt binaries (default: cargo build --release in the repo)
#   WARDEN_BEFORE_BIN        the Warden binary to compare with (peer "warden-before", port
#                            PORT_BASE+8, same config as "warden"); required by that peer
#   HICKORY_BIN              prebuilt hickory-dns (default: $HICKORY_ROOT/bin/hickory-dns,
#                            installed if missing; HICKORY_ROOT=/tmp/peers-hickory,
#                            HICKORY_TARGET=/tmp/peers-hickory-target, HICKORY_VERSION=0.26.3)
#   KEEP_WORK=1              keep the temporary work dir (configs, lists, logs, dnsperf output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RULES=${RULES:-1000000}
QUERIES=${QUERIES:-100000}
DURATION=${DURATION:-10}
RATE=${RATE:-50000}
FIXED_DURATION=${FIXED_DURATION:-20}
REPEATS=${REPEATS:-3}
PEERS=${PEERS:-warden unbound dnsmasq dnsdist hickory}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-100}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PORT_BASE=${PORT_BASE:-5450}
HICKORY_ROOT=${HICKORY_ROOT:-/tmp/peers-hickory}
HICKORY_TARGET=${HICKORY_TARGET:-/tmp/peers-hickory-target}
HICKORY_VERSION=${HICKORY_VERSION:-0.26.3}
STARTUP_TIMEOUT=300
ALLOWED=1000
ALLOWED_DOMAIN=warden-peers-allowed.com # not under any listed name (checked below)
SHARED="$ROOT/../shared/data/blocklists"
export LC_ALL=C

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'peers.sh: error: %s\n' "$*" >&2; exit 1; }

declare -A PORT=([warden]=$((PORT_BASE + 1)) [unbound]=$((PORT_BASE + 2)) [dnsmasq]=$((PORT_BASE + 3))
    [dnsdist]=$((PORT_BASE + 4)) [hickory]=$((PORT_BASE + 5)) [echo]=$((PORT_BASE + 6))
    [warden-noaudit]=$((PORT_BASE + 7)) [warden-before]=$((PORT_BASE + 8)))
STUB_PORT=$((PORT_BASE + 9))
for p in $PEERS; do
    [ -n "${PORT[$p]:-}" ] && [ "$p" != echo ] || die "unknown peer '$p' (known: warden warden-noaudit warden-before unbound dnsmasq dnsdist hickory)"
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server and dnsperf on different cores)"
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "REPEATS must be a positive integer"

# ---- tools: Debian packages, hickory-dns, Warden and the stub ----

need_pkgs=()
command -v dnsperf >/dev/null 2>&1 || need_pkgs+=(dnsperf)
command -v dig >/dev/null 2>&1 || need_pkgs+=(bind9-dnsutils)
command -v taskset >/dev/null 2>&1 || need_pkgs+=(util-linux)
for p in $PEERS; do
    case $p in
    unbound) command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || need_pkgs+=(unbound) ;;
    dnsmasq) command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_pkgs+=(dnsmasq) ;;
    dnsdist) command -v dnsdist >/dev/null 2>&1 || need_pkgs+=(dnsdist) ;;
    esac
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    say "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y "${need_pkgs[@]}"; then
        $SUDO apt-get update
        $SUDO apt-get install -y "${need_pkgs[@]}"
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

if [[ " $PEERS " == *" hickory "* ]]; then
    HICKORY_BIN=${HICKORY_BIN:-$HICKORY_ROOT/bin/hickory-dns}
    if [ ! -x "$HICKORY_BIN" ]; then
        say "installing hickory-dns $HICKORY_VERSION (--features blocklist) into $HICKORY_ROOT (niced)"
        CARGO_TARGET_DIR="$HICKORY_TARGET" nice -n 10 cargo install hickory-dns --version "$HICKORY_VERSION" \
            --features blocklist --locked --root "$HICKORY_ROOT"
        HICKORY_BIN="$HICKORY_ROOT/bin/hickory-dns"
    fi
    [ -x "$HICKORY_BIN" ] || die "hickory-dns not found at $HICKORY_BIN"
fi

WARDEN_SOURCE="built from the repo"
[ -n "${WARDEN_BIN:-}" ] && WARDEN_SOURCE="given by WARDEN_BIN, so not necessarily built from that commit"
if [ -z "${WARDEN_BIN:-}" ] || [ -z "${STUB_BIN:-}" ]; then
    say "building warden and the stub upstream (release)"
    (cd "$ROOT" && cargo build --release --bin warden --example stub_upstream)
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
    WARDEN_BIN=${WARDEN_BIN:-$TARGET/warden}
    STUB_BIN=${STUB_BIN:-$TARGET/examples/stub_upstream}
fi
[ -x "$WARDEN_BIN" ] && [ -x "$STUB_BIN" ] || die "warden or stub_upstream binary not found ($WARDEN_BIN, $STUB_BIN)"
if [[ " $PEERS " == *" warden-before "* ]]; then
    [ -n "${WARDEN_BEFORE_BIN:-}" ] || die "peer warden-before needs WARDEN_BEFORE_BIN (the Warden binary to compare with)"
    [ -x "$WARDEN_BEFORE_BIN" ] || die "WARDEN_BEFORE_BIN not found or not executable ($WARDEN_BEFORE_BIN)"
fi

# ---- processes, cleanup ----

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warden-peers.XXXXXX")
PIDS=() # everything started, stopped on exit

stop() { # PID: SIGTERM, up to 5 s, then SIGKILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        say "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if command -v ss >/dev/null 2>&1; then
    for port in "${PORT[@]}" "$STUB_PORT"; do
        if ss -Hlnu "sport = :$port" | grep -q . || ss -Hlnt "sport = :$port" | grep -q .; then
            die "port $port is in use (set PORT_BASE)"
        fi
    done
fi
PIN_SERVER=(taskset -c "$SERVER_CPU")
PIN_CLIENT=(taskset -c "$CLIENT_CPU")

# ---- the block list and the query files ----

# Deterministic shuffle: decorate with awk's seeded rand(), sort, undecorate.
shuffle() { # SEED
    awk -v seed="$1" 'BEGIN { srand(seed) } { printf "%.15f\t%s\n", rand(), $0 }' |
        sort -k1,1 | cut -f2-
}

say "generating a ${RULES}-name block list in $WORK (as benches/dnsperf.sh does)"
REAL=0
if [ -d "$SHARED" ]; then
    # Host names out of hosts, plain, adblock, dnsmasq, unbound and RPZ lines: drop
    # exceptions and comments, split on anything that cannot be in a name, keep tokens
    # that look like a host name with an alphabetic TLD (so no IP addresses).
    find "$SHARED" -type f -exec zcat -f -- {} + |
        sed -e '/^[[:space:]]*@@/d' -e 's/[#!;].*$//' |
        tr 'A-Z' 'a-z' | tr -cs 'a-z0-9._-' '\n' |
        sed -e 's/^[.]*//' -e 's/[.]*$//' |
        grep -E '^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$' |
        awk 'length($0) <= 200' | sort -u | shuffle 1 | awk -v n="$RULES" 'NR <= n' >"$WORK/real.txt"
    REAL=$(wc -l <"$WORK/real.txt")
else
    : >"$WORK/real.txt"
fi
SYNTH=$((RULES - REAL))
awk -v n="$SYNTH" 'BEGIN {
    srand(2); c = "abcdefghijklmnopqrstuvwxyz0123456789"
    for (i = 1; i <= n; i++) {
        r = ""
        for (j = 0; j < 10; j++) r = r substr(c, int(rand() * 36) + 1, 1)
        printf "s%d-%s.example-block.net\n", i, r
    }
}' | cat "$WORK/real.txt" - >"$WORK/blocklist.txt"
rm -f "$WORK/real.txt"
LISTED=$(wc -l <"$WORK/blocklist.txt")
[ "$LISTED" -eq "$RULES" ] || die "block list has $LISTED names, expected $RULES"
if grep -qxE "((allowed-[0-9]+|check)\.)?${ALLOWED_DOMAIN//./\\.}|${ALLOWED_DOMAIN#*.}" "$WORK/blocklist.txt"; then
    die "the block list covers $ALLOWED_DOMAIN, which the allowed queries use"
fi

# (a) blocked: a sample of listed names; (b) the same sample as x.<listed> subdomains;
# (c) allowed names the list does not cover (dnsperf loops over the file, so after the
# warm-up pass every query is answered from the server's cache).
shuffle 3 <"$WORK/blocklist.txt" | awk -v n="$QUERIES" 'NR <= n' >"$WORK/sample.txt"
awk '{ print $0 " A" }' "$WORK/sample.txt" >"$WORK/blocked.queries"
awk '{ print "x." $0 " A" }' "$WORK/sample.txt" >"$WORK/subdomain.queries"
awk -v n="$ALLOWED" -v d="$ALLOWED_DOMAIN" 'BEGIN { for (i = 1; i <= n; i++) printf "allowed-%d.%s A\n", i, d }' \
    >"$WORK/allowed.queries"
PROBE_NAME=$(sed -n 1p "$WORK/sample.txt")

# ---- per-server configs (each converts the list to its own syntax) ----

HZ=$(getconf CLK_TCK)

config_warden() { # DIR PORT AUDIT(on|off)
    local dir=$1
    mkdir -p "$dir"
    ln -sf "$WORK/blocklist.txt" "$dir/blocklist.txt" # plain list: Warden's "domains" format
    cat >"$dir/warden.toml" <<EOF
# Generated by benches/peers/peers.sh
[server]
listen = ["127.0.0.1:$2"]
[server.rate_limit]
qps = 0   # one load-generating client: measure the server, not the limiter
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[upstream]
servers = ["127.0.0.1:$STUB_PORT"]
timeout = "2s"
[categories.bench]
description = "benchmark list"
[groups.default]
block = ["bench"]
[[lists]]
name = "bench"
category = "bench"
path = "blocklist.txt"
format = "domains"
EOF
    if [ "$3" = off ]; then printf '\n[audit]\nenabled = false\n' >>"$dir/warden.toml"; fi
}

config_unbound() { # DIR PORT
    local dir=$1
    mkdir -p "$dir"
    # always_nxdomain: NXDOMAIN for the zone's name and everything below it.
    awk '{ printf "local-zone: \"%s.\" always_nxdomain\n", $0 }' "$WORK/blocklist.txt" >"$dir/blocklist.conf"
    cat >"$dir/unbound.conf" <<EOF
# Generated by benches/peers/peers.sh
server:
    interface: 127.0.0.1
    port: $2
    do-ip6: no
    do-tcp: yes
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 0
    log-queries: no
    log-replies: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    prefetch: no
    msg-cache-size: 64m
    rrset-cache-size: 128m
    num-queries-per-thread: 4096
    outgoing-range: 8192
    statistics-interval: 0
    extended-statistics: no
    include: "$dir/blocklist.conf"
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$STUB_PORT
EOF
}

config_dnsmasq() { # DIR PORT
    local dir=$1
    mkdir -p "$dir"
    # address=/name/ with no address: NXDOMAIN for the name and all its subdomains.
    awk '{ printf "address=/%s/\n", $0 }' "$WORK/blocklist.txt" >"$dir/blocklist.conf"
    cat >"$dir/dnsmasq.conf" <<EOF
# Generated by benches/peers/peers.sh
port=$2
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
server=127.0.0.1#$STUB_PORT
cache-size=10000
dns-forward-max=1000
user=$(id -un)
pid-file=
conf-file=$dir/blocklist.conf
EOF
}

config_dnsdist() { # DIR PORT
    local dir=$1
    mkdir -p "$dir"
    ln -sf "$WORK/blocklist.txt" "$dir/blocklist.txt" # plain list, read by Lua below
    cat >"$dir/dnsdist.conf" <<EOF
-- Generated by benches/peers/peers.sh
setSecurityPollSuffix("")
setLocal("127.0.0.1:$2")           -- one UDP listener thread (and one TCP acceptor)
newServer({address="127.0.0.1:$STUB_PORT", name="stub"})
local pc = newPacketCache(100000, {maxTTL=86400})
getPool(""):setCache(pc)
local smn = newSuffixMatchNode()
for line in io.lines("$dir/blocklist.txt") do
  smn:add(line)
end
addAction(SuffixMatchNodeRule(smn, true), RCodeAction(DNSRCode.NXDOMAIN))
EOF
}

config_hickory() { # DIR PORT
    local dir=$1
    mkdir -p "$dir"
    # Each name twice: the name itself and "*.name" (wildcard_match), so subdomains match.
    awk '{ print $0; print "*." $0 }' "$WORK/blocklist.txt" >"$dir/blocklist.txt"
    cat >"$dir/hickory.toml" <<EOF
# Generated by benches/peers/peers.sh
listen_addrs_ipv4 = ["127.0.0.1"]
listen_port = $2
directory = "$dir"
drop_privileges = false

[[zones]]
zone = "."
zone_type = "External"

[[zones.stores]]
type = "blocklist"
wildcard_match = true
min_wildcard_depth = 2
lists = ["blocklist.txt"]
sinkhole_ipv4 = "0.0.0.0"
sinkhole_ipv6 = "::"
log_clients = false

[[zones.stores]]
type = "forward"

[[zones.stores.name_servers]]
ip = "127.0.0.1"
connections = [{ port = $STUB_PORT, protocol = { type = "udp" } }]

[zones.stores.options]
cache_size = 100000
EOF
}

ECHO_KIND=""
build_echo() { # the bare UDP echo server: sets ECHO_CMD
    local dir="$WORK/echo"
    mkdir -p "$dir"
    if command -v cc >/dev/null 2>&1; then
        cat >"$dir/echo.c" <<'EOF'
/* Bare UDP echo for the ceiling: one thread, recvfrom + sendto, QR bit set. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a)) { perror("echo"); return 1; }
    unsigned char b[4096];
    for (;;) {
        struct sockaddr_in p;
        socklen_t l = sizeof p;
        ssize_t n = recvfrom(fd, b, sizeof b, 0, (struct sockaddr *)&p, &l);
        if (n < 3) continue;
        b[2] |= 0x80; /* QR: a response */
        sendto(fd, b, (size_t)n, 0, (struct sockaddr *)&p, l);
    }
}
EOF
        cc -O2 -o "$dir/echo" "$dir/echo.c" || die "cc failed to build the echo server"
        ECHO_CMD=("$dir/echo" "${PORT[echo]}")
        ECHO_KIND="C recvfrom/sendto loop (cc -O2)"
    else
        cat >"$dir/echo.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    b, p = s.recvfrom(4096)
    if len(b) >= 3:
        s.sendto(b[:2] + bytes([b[2] | 0x80]) + b[3:], p)
EOF
        ECHO_CMD=(python3 "$dir/echo.py" "${PORT[echo]}")
        ECHO_KIND="python3 (no cc found: a low ceiling)"
    fi
}

say "converting the list for each server"
for p in $PEERS; do
    case $p in
    warden) config_warden "$WORK/warden" "${PORT[warden]}" on ;;
    warden-noaudit) config_warden "$WORK/warden-noaudit" "${PORT[warden-noaudit]}" off ;;
    warden-before) config_warden "$WORK/warden-before" "${PORT[warden-before]}" on ;;
    *) "config_$p" "$WORK/$p" "${PORT[$p]}" ;;
    esac
done
build_echo

# The command line that starts each server (pinned to SERVER_CPU, one server thread).
server_cmd() { # NAME: sets CMD
    local d="$WORK/$1"
    case $1 in
    # Warden: a tokio multi-thread runtime with no worker knob of its own; tokio reads
    # TOKIO_WORKER_THREADS (and would size itself from the one-CPU affinity mask anyway).
    warden | warden-noaudit) CMD=(env -u RUST_LOG NO_COLOR=1 TOKIO_WORKER_THREADS=1 "$WARDEN_BIN" serve --config "$d/warden.toml") ;;
    warden-before) CMD=(env -u RUST_LOG NO_COLOR=1 TOKIO_WORKER_THREADS=1 "$WARDEN_BEFORE_BIN" serve --config "$d/warden.toml") ;;
    unbound) CMD=(unbound -d -c "$d/unbound.conf") ;;
    dnsmasq) CMD=(dnsmasq -k -C "$d/dnsmasq.conf") ;;
    dnsdist) CMD=(dnsdist --supervised --disable-syslog -C "$d/dnsdist.conf") ;;
    hickory) CMD=(env -u RUST_LOG "$HICKORY_BIN" --quiet --workers 1 -c "$d/hickory.toml") ;;
    echo) CMD=("${ECHO_CMD[@]}") ;;
    esac
}

# ---- measuring helpers ----

# dig's view of one query: "NXDOMAIN", "NOERROR 192.0.2.1", "NOERROR" (no A), or "" on failure.
probe() { # PORT NAME [TIMEOUT]
    dig +tries=1 +time="${3:-1}" -p "$1" @127.0.0.1 "$2" A +noall +comments +answer 2>/dev/null |
        awk '/status:/ { s = $0; sub(/.*status: /, "", s); sub(/,.*/, "", s) }
             $4 == "A" { a = a " " $5 } END { if (s != "") print s a }' || true
}
blocked_answer() { [[ "$1" == NXDOMAIN || "$1" == "NOERROR 0.0.0.0" ]]; }

rss_kb() { awk -v k="$2" '$1 == k ":" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; } # utime + stime, all threads
sys_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
child_ticks() { # sets CHILD (this shell's reaped children: dnsperf)
    times >"$WORK/times"
    CHILD=$(awk -v hz="$HZ" 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%.0f", t * hz }' "$WORK/times")
}
loadavg() { awk '{ print $1 " " $2 " " $3 }' /proc/loadavg; }
builds() { { pgrep -x rustc || true; } | wc -l; }

RESULTS="$WORK/results.tsv" # server, metric, repeat, value
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$REP" "$3" >>"$RESULTS"; }
NOTES=()

# run_dnsperf SERVER PID PORT CASE FILE SECONDS [extra flags]: sets QPS CPU_US DONE SENT OUT
RUN=0
run_dnsperf() {
    local srv=$1 pid=$2 port=$3 case=$4 file=$5 secs=$6 w0 w1 s0 s1 c0 c1 t0 t1 codes cpu lost
    shift 6
    OUT="$WORK/dnsperf-$((++RUN))-$srv-$case.out"
    child_ticks
    c0=$CHILD t0=$(date +%s.%N) w0=$(cpu_ticks "$pid") s0=$(sys_busy)
    timeout $((secs + 60)) "${PIN_CLIENT[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$file" \
        -l "$secs" -c "$CLIENTS" -q "$OUTSTANDING" "$@" >"$OUT" 2>&1 ||
        { tail -n 20 "$OUT" >&2; die "dnsperf ($srv, $case) failed"; }
    t1=$(date +%s.%N) w1=$(cpu_ticks "$pid") s1=$(sys_busy)
    child_ticks
    c1=$CHILD
    kill -0 "$pid" 2>/dev/null || die "$srv died during $case (log: $WORK/$srv.log)"
    SENT=$(awk '/Queries sent:/ { print $3; exit }' "$OUT")
    DONE=$(awk '/Queries completed:/ { print $3; exit }' "$OUT")
    lost=$(awk '/Queries lost:/ { print $3 " " $4; exit }' "$OUT")
    codes=$(awk -F': *' '/Response codes:/ { print $2; exit }' "$OUT")
    QPS=$(awk '/Queries per second:/ { printf "%.0f", $4; exit }' "$OUT")
    [ -n "$DONE" ] && [ "$DONE" -gt 0 ] && [ -n "$QPS" ] || { tail -n 20 "$OUT" >&2; die "no results from dnsperf ($srv, $case)"; }
    CPU_US=$(awk -v d=$((w1 - w0)) -v hz="$HZ" -v n="$DONE" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    # Where the CPU went, in % of one CPU ("other": anything else on the machine).
    cpu=$(awk -v w=$((w1 - w0)) -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
        'BEGIN { f = 100 / hz / (t1 - t0); o = (s - w - c) * f; if (o < 0) o = 0
            printf "server %.0f%%, dnsperf %.0f%%, other %.0f%%", w * f, c * f, o }')
    OTHER=$(sed 's/.*other \([0-9]*\)%.*/\1/' <<<"$cpu")
    printf '  %-9s %-22s %8s q/s, CPU %6s µs/query; lost %s; %s; %s\n' \
        "$srv" "$case:" "$QPS" "$CPU_US" "$lost" "$codes" "$cpu"
    CODES=$codes
}

# Share of completed queries with this response code (0–100).
code_pct() { awk -v c="$2" '{ for (i = 1; i < NF; i++) if ($i == c) { gsub(/[(),%]/, "", $(i + 2)); print $(i + 2); exit } } END { }' <<<"$1"; }
check_codes() { # SERVER CASE WANT(NXDOMAIN|NOERROR)
    local pct
    pct=$(code_pct "$CODES" "$3")
    if [ -z "$pct" ] || awk -v p="$pct" 'BEGIN { exit !(p < 99) }'; then
        NOTES+=("$1, $2, repeat $REP: only ${pct:-0}% $3 ($CODES)")
        say "warning: $1 $2: only ${pct:-0}% $3 ($CODES)"
    fi
}

# p50 and p99 latency in ms from dnsperf -v output; lost queries count as infinitely slow.
percentiles() { # OUT SENT: prints "p50 p99" ("lost" when the percentile falls on a lost query)
    awk '/^> [A-Z]/ { print $NF }' "$1" | sort -g | awk -v n="$2" '
        BEGIN { i50 = int(0.50 * n + 0.999999); i99 = int(0.99 * n + 0.999999) }
        NR == i50 { p50 = sprintf("%.3f", $1 * 1000) }
        NR == i99 { p99 = sprintf("%.3f", $1 * 1000) }
        END { print (p50 == "" ? "lost" : p50) " " (p99 == "" ? "lost" : p99) }'
}

# ---- one server: start, check, measure, stop ----

measure() { # NAME
    local srv=$1 port=${PORT[$1]} pid t0 t1 ans i sub allowed up rss0 rss1 l0 l1 b0 b1 lat
    local bcode=NXDOMAIN
    l0=$(loadavg) b0=$(builds)
    server_cmd "$srv"
    t0=$(date +%s.%N)
    "${PIN_SERVER[@]}" "${CMD[@]}" >"$WORK/$srv.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if [ "$srv" = echo ]; then
        for ((i = 0; i < 100; i++)); do
            [ -n "$(probe "$port" echo.test)" ] && break
            kill -0 "$pid" 2>/dev/null || { cat "$WORK/echo.log" >&2; die "the echo server exited"; }
            sleep 0.05
        done
        [ -n "$(probe "$port" echo.test)" ] || die "the echo server does not answer"
        run_dnsperf echo "$pid" "$port" "echo" "$WORK/blocked.queries" "$DURATION"
        record echo qps_echo "$QPS"
        record echo cpu_echo "$CPU_US"
        record echo other "$OTHER"
        stop "$pid"
        l1=$(loadavg) b1=$(builds)
        record echo load "$l0 → $l1 (rustc processes $b0 → $b1)"
        printf '  %-9s load average %s → %s; rustc processes %s → %s\n' echo "$l0" "$l1" "$b0" "$b1"
        return
    fi
    # Start-up: until the server gives the block answer for a listed name.
    ans=""
    while :; do
        ans=$(probe "$port" "$PROBE_NAME" 1)
        t1=$(date +%s.%N)
        blocked_answer "$ans" && break
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$WORK/$srv.log" >&2; die "$srv exited during start-up (log: $WORK/$srv.log)"; }
        awk -v a="$t0" -v b="$t1" -v m="$STARTUP_TIMEOUT" 'BEGIN { exit !(b - a > m) }' &&
            { tail -n 20 "$WORK/$srv.log" >&2; die "$srv did not block $PROBE_NAME within $STARTUP_TIMEOUT s (last answer: '$ans')"; }
        sleep 0.02
    done
    up=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    [ "$ans" = NXDOMAIN ] || bcode=NOERROR
    # Correctness: the subdomain is blocked, an allowed name is answered through the stub.
    sub=$(probe "$port" "x.$PROBE_NAME" 2)
    allowed=$(probe "$port" "check.$ALLOWED_DOMAIN" 3)
    blocked_answer "$sub" || die "$srv does not block x.$PROBE_NAME (answer: '$sub')"
    [ "$allowed" = "NOERROR 192.0.2.1" ] || die "$srv does not forward check.$ALLOWED_DOMAIN to the stub (answer: '$allowed')"
    rss0=$(rss_kb "$pid" VmRSS)
    printf '  %-9s ready in %s s; %s → %s, x.%s → %s, check.%s → %s; RSS %.1f MiB\n' "$srv" "$up" \
        "$PROBE_NAME" "$ans" "$PROBE_NAME" "$sub" "$ALLOWED_DOMAIN" "$allowed" "$(awk -v k="$rss0" 'BEGIN { print k / 1024 }')"
    record "$srv" startup "$up"
    record "$srv" rss_loaded "$rss0"
    record "$srv" block_answer "$ans"

    run_dnsperf "$srv" "$pid" "$port" blocked "$WORK/blocked.queries" "$DURATION"
    check_codes "$srv" blocked "$bcode"
    record "$srv" qps_blocked "$QPS"
    record "$srv" other "$OTHER"
    run_dnsperf "$srv" "$pid" "$port" subdomains "$WORK/subdomain.queries" "$DURATION"
    check_codes "$srv" subdomains "$bcode"
    record "$srv" qps_subdomain "$QPS"
    record "$srv" other "$OTHER"
    run_dnsperf "$srv" "$pid" "$port" warm-up "$WORK/allowed.queries" 30 -n 2 -Q 10000
    run_dnsperf "$srv" "$pid" "$port" allowed-cached "$WORK/allowed.queries" "$DURATION"
    check_codes "$srv" allowed-cached NOERROR
    record "$srv" qps_allowed "$QPS"
    record "$srv" other "$OTHER"

    run_dnsperf "$srv" "$pid" "$port" "blocked@$RATE" "$WORK/blocked.queries" "$FIXED_DURATION" -Q "$RATE" -v
    lat=$(percentiles "$OUT" "$SENT")
    printf '  %-9s %-22s p50 %s ms, p99 %s ms\n' "" "" ${lat}
    record "$srv" cpu_blocked "$CPU_US"
    record "$srv" rate_blocked "$QPS"
    record "$srv" other "$OTHER"
    record "$srv" p50_blocked "${lat% *}"
    record "$srv" p99_blocked "${lat#* }"
    record "$srv" loss_blocked "$(awk -v s="$SENT" -v d="$DONE" 'BEGIN { printf "%.2f", 100 * (s - d) / s }')"
    rm -f "$OUT"
    run_dnsperf "$srv" "$pid" "$port" "allowed@$RATE" "$WORK/allowed.queries" "$FIXED_DURATION" -Q "$RATE" -v
    lat=$(percentiles "$OUT" "$SENT")
    printf '  %-9s %-22s p50 %s ms, p99 %s ms\n' "" "" ${lat}
    record "$srv" cpu_allowed "$CPU_US"
    record "$srv" rate_allowed "$QPS"
    record "$srv" other "$OTHER"
    record "$srv" p50_allowed "${lat% *}"
    record "$srv" p99_allowed "${lat#* }"
    record "$srv" loss_allowed "$(awk -v s="$SENT" -v d="$DONE" 'BEGIN { printf "%.2f", 100 * (s - d) / s }')"
    rm -f "$OUT"

    rss1=$(rss_kb "$pid" VmRSS)
    record "$srv" rss_after "$rss1"
    record "$srv" rss_peak "$(rss_kb "$pid" VmHWM)"
    stop "$pid"
    l1=$(loadavg) b1=$(builds)
    record "$srv" load "$l0 → $l1 (rustc processes $b0 → $b1)"
    printf '  %-9s RSS after the runs %.1f MiB; load average %s → %s; rustc processes %s → %s\n' "$srv" \
        "$(awk -v k="$rss1" 'BEGIN { print k / 1024 }')" "$l0" "$l1" "$b0" "$b1"
}

# ---- the run ----

say "starting the stub upstream on 127.0.0.1:$STUB_PORT (CPU $CLIENT_CPU)"
"${PIN_CLIENT[@]}" "$STUB_BIN" "127.0.0.1:$STUB_PORT" 2>"$WORK/stub.log" &
STUB_PID=$!
PIDS+=("$STUB_PID")
for ((i = 0; i < 200; i++)); do
    grep -q "stub upstream on" "$WORK/stub.log" 2>/dev/null && break
    kill -0 "$STUB_PID" 2>/dev/null || die "the stub upstream exited (log: $WORK/stub.log)"
    sleep 0.05
done
grep -q "stub upstream on" "$WORK/stub.log" || die "the stub upstream did not start within 10 s"

read -r -a ORDER <<<"$PEERS"
ORDER+=(echo)
echo "peers.sh: $LISTED-name list ($REAL real + $SYNTH synthetic), $REPEATS repeat(s); dnsperf -c $CLIENTS -q $OUTSTANDING," \
    "saturating runs ${DURATION} s, fixed-rate runs -Q $RATE for ${FIXED_DURATION} s; servers on CPU $SERVER_CPU, dnsperf and the stub on CPU $CLIENT_CPU"
for ((REP = 1; REP <= REPEATS; REP++)); do
    n=${#ORDER[@]}
    rot=$(((REP - 1) % n))
    this=("${ORDER[@]:$rot}" "${ORDER[@]:0:$rot}")
    echo
    echo "repeat $REP of $REPEATS ($(date +%T)): ${this[*]}"
    for srv in "${this[@]}"; do measure "$srv"; done
done

# ---- the table ----

median() { # SERVER METRIC: median over the repeats ("" if none; "lost" if the median is lost)
    awk -F'\t' -v s="$1" -v m="$2" '$1 == s && $2 == m { print ($4 == "lost" ? 1e300 : $4) }' "$RESULTS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; x = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            if (x >= 1e299) print "lost"; else print x }'
}
fmt() { # METRIC VALUE
    case $2 in "" | lost) echo "${2:-–}"; return ;; esac
    case $1 in
    startup) printf '%.2f s' "$2" ;;
    rss_*) printf '%.1f MiB' "$(awk -v k="$2" 'BEGIN { print k / 1024 }')" ;;
    qps_* | rate_*) awk -v q="$2" 'BEGIN { s = sprintf("%.0f", q); o = ""
        while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }; print s o }' ;;
    cpu_*) printf '%.2f µs' "$2" ;;
    p50_* | p99_*) printf '%.3f ms' "$2" ;;
    loss_*) printf '%.2f%%' "$2" ;;
    other) printf '%.0f%%' "$2" ;;
    esac
}
ratio() { # WARDEN PEER
    case "$1$2" in *lost*) echo "";; *) awk -v w="$1" -v p="$2" 'BEGIN { if (w != "" && p != "" && p > 0) printf "%.2f×", w / p }';; esac
}

PEER_LIST=()
WARDEN_NAME=""
for p in $PEERS; do
    case $p in
    warden) WARDEN_NAME=warden ;;
    warden-noaudit) [ -z "$WARDEN_NAME" ] && WARDEN_NAME=warden-noaudit ;;
    warden-before) ;; # compared with warden below, not a peer
    *) PEER_LIST+=("$p") ;;
    esac
done
COLS=()
for p in $PEERS; do [[ $p == warden* ]] && COLS+=("$p"); done
COLS+=("${PEER_LIST[@]}")

declare -A LABEL=([startup]="start-up with the list (until it blocks a listed name)"
    [rss_loaded]="RSS after loading" [rss_after]="RSS after the runs" [rss_peak]="peak RSS (VmHWM)"
    [qps_blocked]="blocked names: queries/s" [qps_subdomain]="blocked subdomains (x.<listed>): queries/s"
    [qps_allowed]="allowed, from cache: queries/s"
    [p50_blocked]="blocked @$RATE q/s: p50 latency" [p99_blocked]="blocked @$RATE q/s: p99 latency"
    [p50_allowed]="cached @$RATE q/s: p50 latency" [p99_allowed]="cached @$RATE q/s: p99 latency"
    [loss_blocked]="blocked @$RATE q/s: lost" [loss_allowed]="cached @$RATE q/s: lost"
    [rate_blocked]="blocked @$RATE q/s: rate achieved" [rate_allowed]="cached @$RATE q/s: rate achieved"
    [other]="other load during the runs (% of one CPU, median)"
    [cpu_blocked]="blocked @$RATE q/s: server CPU per query" [cpu_allowed]="cached @$RATE q/s: server CPU per query")
METRICS=(startup rss_loaded rss_after rss_peak qps_blocked qps_subdomain qps_allowed rate_blocked p50_blocked
    p99_blocked rate_allowed p50_allowed p99_allowed loss_blocked loss_allowed cpu_blocked cpu_allowed other)

echo
echo "## Results: median of $REPEATS; a peer's cell is its figure (Warden's ÷ the peer's)"
echo
hdr="| metric |"
sep="|---|"
for c in "${COLS[@]}"; do hdr="$hdr $c |"; sep="$sep---:|"; done
echo "$hdr echo ceiling |"
echo "$sep---:|"
for m in "${METRICS[@]}"; do
    row="| ${LABEL[$m]} |"
    w=""
    [ -n "$WARDEN_NAME" ] && w=$(median "$WARDEN_NAME" "$m")
    for c in "${COLS[@]}"; do
        v=$(median "$c" "$m")
        cell=$(fmt "$m" "$v")
        if [[ $c != warden* ]] && [ -n "$w" ] && [ "$m" != other ]; then
            r=$(ratio "$w" "$v")
            [ -n "$r" ] && cell="$cell ($r)"
        fi
        row="$row $cell |"
    done
    case $m in
    qps_blocked) e=$(median echo qps_echo); row="$row $(fmt qps_x "$e") |" ;;
    cpu_blocked) e=$(median echo cpu_echo); row="$row $(fmt cpu_x "$e") (saturated) |" ;;
    other) e=$(median echo other); row="$row $(fmt other "$e") |" ;;
    *) row="$row |" ;;
    esac
    echo "$row"
done
echo "| block answer | $(for c in "${COLS[@]}"; do printf '%s | ' "$(awk -F'\t' -v s="$c" '$1 == s && $2 == "block_answer" { print $4; exit }' "$RESULTS")"; done) |"

# ---- targets ----

best() { # METRIC max|min: "peer value" of the best peer
    local p v out=""
    for p in "${PEER_LIST[@]}"; do
        v=$(median "$p" "$1")
        [ -n "$v" ] && [ "$v" != lost ] && out="$out$p $v"$'\n'
    done
    if [ "$2" = max ]; then sort -k2,2gr <<<"$out"; else sort -k2,2g <<<"$out"; fi | awk 'NF { print; exit }'
}
verdict() { awk -v c="$1" 'BEGIN { print (c ? "PASS" : "MISS") }'; }

if [ -n "$WARDEN_NAME" ] && [ ${#PEER_LIST[@]} -gt 0 ]; then
    echo
    echo "## Targets (issue #8), Warden = $WARDEN_NAME"
    echo
    ECHO_QPS=$(median echo qps_echo)
    for m in qps_blocked qps_allowed; do
        read -r bp bv <<<"$(best "$m" max)"
        w=$(median "$WARDEN_NAME" "$m")
        ok=$(awk -v w="$w" -v b="$bv" -v e="$ECHO_QPS" 'BEGIN { print (w >= b || (e > 0 && w >= 0.95 * e)) }')
        printf -- '- %s: %s ≥ 1.0× best peer (%s, %s) or ≥ 0.95× echo ceiling (%s): %s vs best, %s of echo\n' \
            "$(verdict "$ok")" "${LABEL[$m]}" "$bp" "$(fmt "$m" "$bv")" "$(fmt "$m" "$ECHO_QPS")" \
            "$(ratio "$w" "$bv")" "$(ratio "$w" "$ECHO_QPS")"
    done
    for t in "cpu_blocked 1.0" "cpu_allowed 1.2"; do
        read -r m lim <<<"$t"
        read -r bp bv <<<"$(best "$m" min)"
        w=$(median "$WARDEN_NAME" "$m")
        ok=$(awk -v w="$w" -v b="$bv" -v l="$lim" 'BEGIN { print (w <= l * b) }')
        printf -- '- %s: %s ≤ %s× best peer (%s, %s): Warden %s = %s\n' "$(verdict "$ok")" "${LABEL[$m]}" "$lim" \
            "$bp" "$(fmt "$m" "$bv")" "$(fmt "$m" "$w")" "$(ratio "$w" "$bv")"
    done
    for m in rss_loaded rss_after; do
        w=$(median "$WARDEN_NAME" "$m")
        if [[ " ${PEER_LIST[*]} " == *" unbound "* ]]; then
            u=$(median unbound "$m")
            ok=$(awk -v w="$w" -v u="$u" 'BEGIN { print (w <= 0.15 * u) }')
            printf -- '- %s: %s ≤ 0.15× unbound (%s): Warden %s = %s\n' "$(verdict "$ok")" "${LABEL[$m]}" \
                "$(fmt "$m" "$u")" "$(fmt "$m" "$w")" "$(ratio "$w" "$u")"
        fi
        read -r bp bv <<<"$(best "$m" min)"
        ok=$(awk -v w="$w" -v b="$bv" 'BEGIN { print (w <= 0.5 * b) }')
        printf -- '- %s: %s ≤ 0.5× leanest peer (%s, %s): %s\n' "$(verdict "$ok")" "${LABEL[$m]}" "$bp" \
            "$(fmt "$m" "$bv")" "$(ratio "$w" "$bv")"
    done
    read -r bp bv <<<"$(best startup min)"
    w=$(median "$WARDEN_NAME" startup)
    ok=$(awk -v w="$w" -v b="$bv" 'BEGIN { print (w <= b) }')
    printf -- '- %s: start-up ≤ 1.0× fastest peer (%s, %s): Warden %s = %s\n' "$(verdict "$ok")" "$bp" \
        "$(fmt startup "$bv")" "$(fmt startup "$w")" "$(ratio "$w" "$bv")"
fi

# ---- after ÷ before (issue #14): two Warden binaries, same config, measured in alternation ----

paired() { # METRIC: after ÷ before within each repeat ("r1 r2 …"), to see the spread
    awk -F'\t' -v m="$1" '$2 == m && $1 == "warden" { a[$3] = $4 } $2 == m && $1 == "warden-before" { b[$3] = $4 }
        END { for (r = 1; r in a || r in b; r++) printf "%s%s", (r > 1 ? " " : ""), ((r in a) && b[r] > 0 ? sprintf("%.3f", a[r] / b[r]) : "–") }' "$RESULTS"
}
if [[ " $PEERS " == *" warden "* && " $PEERS " == *" warden-before "* ]]; then
    echo
    echo "## After ÷ before: warden ($WARDEN_BIN) ÷ warden-before ($WARDEN_BEFORE_BIN), medians of $REPEATS"
    echo
    echo "| metric | after (warden) | before (warden-before) | after ÷ before | per repeat | target | verdict |"
    echo "|---|---:|---:|---:|---|---|---|"
    # Queries/s may not fall more than 3%, CPU per query may not rise more than 3%.
    for t in "qps_blocked ≥ 0.97" "qps_subdomain ≥ 0.97" "qps_allowed ≥ 0.97" "cpu_blocked ≤ 1.03" "cpu_allowed ≤ 1.03"; do
        read -r m op lim <<<"$t"
        a=$(median warden "$m") b=$(median warden-before "$m")
        r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a != "" && b > 0) printf "%.3f", a / b }')
        ok=$(awk -v r="$r" -v op="$op" -v l="$lim" 'BEGIN { print (r != "" && (op == "≥" ? r >= l : r <= l)) }')
        printf '| %s | %s | %s | %s | %s | %s %s | %s |\n' "${LABEL[$m]}" "$(fmt "$m" "$a")" "$(fmt "$m" "$b")" \
            "${r:-–}" "$(paired "$m")" "$op" "$lim" "$(verdict "$ok")"
    done
fi

echo
echo "## Load averages (1/5/15 min) before → after each server's turn"
for ((REP = 1; REP <= REPEATS; REP++)); do
    awk -F'\t' -v r="$REP" '$3 == r && $2 == "load" { printf "%s%s %s", (n++ ? "; " : "- repeat " r ": "), $1, $4 } END { print "" }' "$RESULTS"
done
for c in "${COLS[@]}" echo; do
    o=$(median "$c" other)
    if [ -n "$o" ] && awk -v o="$o" 'BEGIN { exit !(o > 25) }'; then
        NOTES+=("$c: other processes used a median $(fmt other "$o") of a CPU during its runs: its figures are bounded by the CPU share it got (compare CPU per query rather than queries/s)")
    fi
done
if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    echo "## Warnings"
    for n in "${NOTES[@]}"; do echo "- $n"; done
fi

echo
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT + local changes"; fi
echo "Warden: $WARDEN_BIN ($WARDEN_SOURCE; repo at $COMMIT); audit log on for 'warden' (as shipped), off for 'warden-noaudit'"
[[ " $PEERS " == *" warden-before "* ]] && echo "Warden before: $WARDEN_BEFORE_BIN (given by WARDEN_BEFORE_BIN; audit log on)"
VERSIONS=() # of the peers in this run (one without a peer prints none)
for p in "${PEER_LIST[@]}"; do
    case $p in
    unbound) VERSIONS+=("$(unbound -V 2>/dev/null | awk 'NR == 1 { print "unbound " $2 }')") ;;
    dnsmasq) VERSIONS+=("$(dnsmasq --version 2>/dev/null | awk 'NR == 1 { print "dnsmasq " $3 }')") ;;
    dnsdist) VERSIONS+=("$(dnsdist --version 2>/dev/null | awk 'NR == 1 { print "dnsdist " $2 }')") ;;
    hickory) VERSIONS+=("$("$HICKORY_BIN" --version 2>/dev/null | head -n1)") ;;
    esac
done
echo "Peers: $(IFS=,; sed 's/,/, /g' <<<"${VERSIONS[*]:-none}"); echo: $ECHO_KIND"
echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2; exit }'); $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo); kernel $(uname -r)"
echo "Block list: $REAL names from the shared lists + $SYNTH synthetic; probe name $PROBE_NAME"
