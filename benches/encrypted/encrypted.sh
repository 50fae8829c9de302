#!/usr/bin/env bash
# Throughput of Warden's encrypted listeners, beside its plain ones measured in the same
# run (run by hand, never by CI; see benches/README.md, "Encrypted listeners").
#
# One Warden (release build, audit log on) blocks a synthetic list of $RULES names and
# serves them over UDP, TCP, DNS over TLS and DNS over HTTPS (HTTP/2, the device ID in the
# path, so the enrolled-device path is what is measured). The server is pinned to one core
# ($SERVER_CPU), the load generator to the other ($CLIENT_CPU). For each transport in turn
# (the order rotating from one repeat to the next), the load generator saturates it for
# $DURATION s with blocked names, and the script reads:
#   - queries/s (dnsperf's "Queries per second"; for DoH, h2load's requests/s);
#   - server CPU per query: the utime+stime delta of the Warden process (/proc/PID/stat)
#     over the queries answered.
# It prints each transport's medians over $REPEATS runs and the ratios of DoT and DoH to
# TCP and UDP, which are the baseline: the same server, the same names, the same run.
#
# DoH load comes from nghttp2's h2load (GET `?dns=` URIs, one per name, $CLIENTS
# connections with $OUTSTANDING streams in flight between them), not from dnsperf: the
# DoH client of dnsperf 2.10 takes one response per read from the socket (its source
# says so), so when a server writes several answers in one TLS record the rest wait
# until more bytes arrive and are counted lost; it measures itself, not the server.
#
# With HICKORY_BIN set (a hickory-dns built with its TLS and HTTPS features, see below),
# hickory-dns serves the same names from its blocklist store over DoT and DoH, pinned to
# the same core, and is measured beside Warden: DoT with dnsperf, DoH with h2load POST
# (hickory-dns answers only POST), as is Warden's DoH POST for the like-for-like ratio.
#   cargo install hickory-dns --version 0.26.3 --features blocklist,https-ring --locked \
#       --root /tmp/peers-hickory-tls     # then HICKORY_BIN=/tmp/peers-hickory-tls/bin/hickory-dns
#
# Usage: benches/encrypted/encrypted.sh 2>&1 | tee encrypted.log
# Environment (all optional): RULES=100000 DURATION=10 REPEATS=3 CLIENTS=8
#   OUTSTANDING=100 SERVER_CPU=1 CLIENT_CPU=0 PORT_BASE=5550 WARDEN_BIN KEEP_WORK=1
#   HICKORY_BIN
# Needs: dnsperf (2.5 or later), h2load (Debian: nghttp2-client), python3, taskset, and
# for hickory-dns kdig (knot-dnsutils).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RULES=${RULES:-100000}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-100}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PORT_BASE=${PORT_BASE:-5550}
DEVICE=benchdevice0000000000
export LC_ALL=C

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'encrypted.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server and dnsperf on different cores)"
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "REPEATS must be a positive integer"
command -v dnsperf >/dev/null 2>&1 || die "dnsperf (2.5 or later, for DoT and DoH) is needed: apt-get install dnsperf"
# (Read into a variable first: with pipefail, grep -q closing the pipe early would
# fail the check.)
DNSPERF_HELP=$(dnsperf -h 2>&1 || true)
grep -q "dot" <<<"$DNSPERF_HELP" || die "this dnsperf cannot speak DoT (2.5 or later is needed)"
command -v h2load >/dev/null 2>&1 || die "h2load is needed for DoH: apt-get install nghttp2-client"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (to write the DoH URIs)"

if [ -z "${WARDEN_BIN:-}" ]; then
    say "building warden (release)"
    (cd "$ROOT" && cargo build --release --bin warden)
    WARDEN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warden"
fi
[ -x "$WARDEN_BIN" ] || die "warden binary not found ($WARDEN_BIN)"

WORK=$(mktemp -d /tmp/warden-encrypted-bench.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    [ -n "${HICKORY_PID:-}" ] && kill "$HICKORY_PID" 2>/dev/null && wait "$HICKORY_PID" 2>/dev/null || true
    [ -n "${KEEP_WORK:-}" ] && say "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

say "list of $RULES names, queries, config in $WORK"
awk -v n="$RULES" 'BEGIN { for (i = 0; i < n; i++) printf "b%d.bench-blocked.test\n", i }' > "$WORK/list.txt"
awk '{ print $1 " A" }' "$WORK/list.txt" > "$WORK/queries.txt"
UDP_PORT=$((PORT_BASE + 1)) DOT_PORT=$((PORT_BASE + 2)) DOH_PORT=$((PORT_BASE + 3))
H_UDP_PORT=$((PORT_BASE + 4)) H_DOT_PORT=$((PORT_BASE + 5)) H_DOH_PORT=$((PORT_BASE + 6))
# The same names as DoH GET URIs (RFC 8484: base64url without padding, ID 0).
python3 - "$WORK/list.txt" "https://127.0.0.1:$DOH_PORT/dns-query/$DEVICE?dns=" > "$WORK/uris.txt" <<'PY'
import base64, struct, sys
for line in open(sys.argv[1]):
    labels = line.strip().split(".")
    qname = b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\0"
    message = struct.pack(">6H", 0, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">2H", 1, 1)
    print(sys.argv[2] + base64.urlsafe_b64encode(message).decode().rstrip("="))
PY
cat > "$WORK/warden.toml" <<EOF
[server]
listen = ["127.0.0.1:$UDP_PORT"]
default_group = "all"
tcp_max_connections = 4096
tcp_connections_per_client = 4096
[server.rate_limit]
qps = 0.0
[admin]
enabled = false
[audit]
path = "$WORK/audit.db"
[upstream]
servers = ["127.0.0.1:9"]
[categories.bench]
[[lists]]
name = "bench"
category = "bench"
path = "$WORK/list.txt"
[groups.all]
block = ["bench"]
[encrypted]
dot_listen = ["127.0.0.1:$DOT_PORT"]
doh_listen = ["127.0.0.1:$DOH_PORT"]
hostname = "warden.bench"
self_signed_dir = "$WORK/tls"
[encrypted.device_rate_limit]
qps = 0.0
[[devices]]
id = "$DEVICE"
name = "bench device"
group = "all"
EOF
"$WARDEN_BIN" config check --config "$WORK/warden.toml" >/dev/null

taskset -c "$SERVER_CPU" "$WARDEN_BIN" serve --config "$WORK/warden.toml" 2> "$WORK/warden.log" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q "serving DNS on" "$WORK/warden.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "warden exited: $(tail -5 "$WORK/warden.log")"
    sleep 0.1
done
grep -q "serving DNS on" "$WORK/warden.log" || die "warden did not start within 30 s"

# One DoH POST body for h2load -d: the first name's query (ID 0).
python3 - "$(head -1 "$WORK/list.txt")" > "$WORK/query.bin" <<'PY'
import struct, sys
qname = b"".join(bytes([len(l)]) + l.encode() for l in sys.argv[1].split(".")) + b"\0"
sys.stdout.buffer.write(struct.pack(">6H", 0, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">2H", 1, 1))
PY

TRANSPORTS=(udp tcp dot doh doh-post)
HICKORY_PID=""
if [ -n "${HICKORY_BIN:-}" ]; then
    [ -x "$HICKORY_BIN" ] || die "HICKORY_BIN is not an executable: $HICKORY_BIN"
    # The blocklist store, as benches/peers/ sets it up: each name and its subdomains,
    # answered with the sinkhole address; the certificate is the one Warden made.
    mkdir -p "$WORK/hickory"
    awk '{ print $0; print "*." $0 }' "$WORK/list.txt" > "$WORK/hickory/blocklist.txt"
    cp "$WORK/tls/cert.pem" "$WORK/tls/key.pem" "$WORK/hickory/"
    cat > "$WORK/hickory/hickory.toml" <<HICKORY
listen_addrs_ipv4 = ["127.0.0.1"]
listen_port = $H_UDP_PORT
tls_listen_port = $H_DOT_PORT
https_listen_port = $H_DOH_PORT
directory = "$WORK/hickory"
drop_privileges = false

[tls_cert]
path = "cert.pem"
private_key = "key.pem"

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
connections = [{ port = 9, protocol = { type = "udp" } }]
HICKORY
    taskset -c "$SERVER_CPU" env -u RUST_LOG "$HICKORY_BIN" --workers 1 \
        -c "$WORK/hickory/hickory.toml" > "$WORK/hickory.log" 2>&1 &
    HICKORY_PID=$!
    for _ in $(seq 1 300); do
        [ "$(kdig +short +tries=1 +timeout=1 -p "$H_UDP_PORT" @127.0.0.1 "$(head -1 "$WORK/list.txt")" A 2>/dev/null)" = "0.0.0.0" ] && break
        kill -0 "$HICKORY_PID" 2>/dev/null || die "hickory-dns exited: $(tail -5 "$WORK/hickory.log")"
        sleep 0.1
    done
    TRANSPORTS+=(hickory-dot hickory-doh-post)
fi

# The server a transport is measured on.
server_pid() { case $1 in hickory-*) echo "$HICKORY_PID" ;; *) echo "$SERVER_PID" ;; esac; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# load TRANSPORT: one saturating run of the load generator; prints its report
load() {
    local mode=$1 port=$UDP_PORT
    # Streams per connection: $OUTSTANDING in flight across $CLIENTS connections.
    local streams=$(((OUTSTANDING + CLIENTS - 1) / CLIENTS))
    local post=(-d "$WORK/query.bin" -H "content-type: application/dns-message"
        -H "accept: application/dns-message" -c "$CLIENTS" -m "$streams" -D "$DURATION")
    case $mode in
    doh)
        taskset -c "$CLIENT_CPU" h2load -i "$WORK/uris.txt" -c "$CLIENTS" -m "$streams" \
            -D "$DURATION" 2>&1
        return
        ;;
    doh-post)
        taskset -c "$CLIENT_CPU" h2load "${post[@]}" \
            "https://127.0.0.1:$DOH_PORT/dns-query/$DEVICE" 2>&1
        return
        ;;
    hickory-doh-post)
        taskset -c "$CLIENT_CPU" h2load "${post[@]}" "https://127.0.0.1:$H_DOH_PORT/dns-query" 2>&1
        return
        ;;
    dot) port=$DOT_PORT ;;
    hickory-dot) mode=dot port=$H_DOT_PORT ;;
    esac
    taskset -c "$CLIENT_CPU" dnsperf -m "$mode" -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" 2>&1
}

# run TRANSPORT: one saturating run; prints "qps cpu_us_per_query"
run() {
    local mode=$1 before after out pid
    pid=$(server_pid "$mode")
    before=$(cpu_ticks "$pid")
    out=$(load "$mode") || true
    after=$(cpu_ticks "$pid")
    echo "$out" > "$WORK/load-$mode-$(date +%s%N).txt"
    local qps completed
    if [[ "$mode" == *doh* ]]; then
        # "finished in 10.00s, 51234.50 req/s, ..." and "requests: N total, N started,
        # N done, N succeeded, ..." (only 2xx answers count as succeeded).
        qps=$(echo "$out" | awk '/^finished in/ { print $4 }')
        completed=$(echo "$out" | awk '/^requests:/ { print $8 }')
    else
        qps=$(echo "$out" | awk '/Queries per second:/ { print $4 }')
        completed=$(echo "$out" | awk '/Queries completed:/ { print $3 }')
    fi
    [ -n "$qps" ] && [ -n "$completed" ] && [ "$completed" -gt 0 ] || die "$mode load gave no result: $(echo "$out" | tail -5)"
    awk -v q="$qps" -v c="$completed" -v t=$((after - before)) -v hz="$TICKS" \
        'BEGIN { printf "%.0f %.2f\n", q, t / hz * 1e6 / c }'
}

declare -A QPS CPU
N=${#TRANSPORTS[@]}
for r in $(seq 1 "$REPEATS"); do
    # Rotate the order, so no transport always runs first (or last).
    order=("${TRANSPORTS[@]:$(((r - 1) % N))}" "${TRANSPORTS[@]:0:$(((r - 1) % N))}")
    for t in "${order[@]}"; do
        read -r q c < <(run "$t")
        QPS[$t]+="$q " CPU[$t]+="$c "
        say "run $r $t: $q queries/s, $c µs CPU per query"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A MQ MC
for t in "${TRANSPORTS[@]}"; do
    MQ[$t]=$(echo "${QPS[$t]}" | median)
    MC[$t]=$(echo "${CPU[$t]}" | median)
done
printf '\n%s, %s rules, %s repeats of %s s, dnsperf -c %s -q %s, server on CPU %s\n' \
    "$("$WARDEN_BIN" --version 2>/dev/null || echo warden)" "$RULES" "$REPEATS" "$DURATION" "$CLIENTS" "$OUTSTANDING" "$SERVER_CPU"
printf '%-18s %12s %14s %12s %12s\n' transport 'queries/s' 'CPU µs/query' 'qps vs tcp' 'qps vs udp'
for t in "${TRANSPORTS[@]}"; do
    awk -v t="$t" -v q="${MQ[$t]}" -v c="${MC[$t]}" -v tq="${MQ[tcp]}" -v uq="${MQ[udp]}" \
        'BEGIN { printf "%-18s %12.0f %14.2f %11.2fx %11.2fx\n", t, q, c, q / tq, q / uq }'
done
if [ -n "$HICKORY_PID" ]; then
    printf '\nWarden vs hickory-dns (queries/s ratio; CPU per query ratio, lower is better)\n'
    for pair in "dot hickory-dot" "doh-post hickory-doh-post"; do
        read -r w h <<<"$pair"
        awk -v t="$w" -v wq="${MQ[$w]}" -v hq="${MQ[$h]}" -v wc="${MC[$w]}" -v hc="${MC[$h]}" \
            'BEGIN { printf "%-18s %11.2fx %13.2fx\n", t, wq / hq, wc / hc }'
    done
fi
