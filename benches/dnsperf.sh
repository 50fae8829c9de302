#!/usr/bin/env bash
# End-to-end benchmark of Warden with dnsperf (run by hand, not by CI; see benches/README.md).
#
# Starts a stub upstream (examples/stub_upstream.rs) and Warden on loopback, Warden
# blocking one category built from a 1,000,000-rule list, and measures with dnsperf:
#   (a) 100% blocked names from that list,
#   (b) allowed names answered from Warden's cache (after a warm-up pass),
# printing queries/s, latency (average and stddev), Warden's CPU time per query, its
# start-up time and its RSS. Only 127.0.0.1 is used; the only other network traffic is
# `apt-get install dnsperf` when dnsperf is missing.
#
# Usage: benches/dnsperf.sh
# Environment (all optional):
#   WARDEN_PORT=5391 STUB_PORT=5399   loopback ports (must be free)
#   DURATION=15                       seconds per measured dnsperf run
#   CLIENTS=8 OUTSTANDING=100         dnsperf -c and -q
#   MAX_QPS=                          dnsperf -Q (empty: unlimited, i.e. saturate Warden)
#   RULES=1000000 QUERIES=100000      list size, number of distinct blocked query names
#   AUDIT=off                         turn Warden's audit log off (default: on, as Warden ships)
#   KEEP_WORK=1                       keep the temporary work dir (configs, lists, logs)
#   RUST_LOG                          passed to Warden (its log: warden.log in the work dir)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WARDEN_PORT=${WARDEN_PORT:-5391}
STUB_PORT=${STUB_PORT:-5399}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-100}
MAX_QPS=${MAX_QPS:-}
RULES=${RULES:-1000000}
QUERIES=${QUERIES:-100000}
ALLOWED=1000
SHARED="$ROOT/../shared/data/blocklists"
export LC_ALL=C

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dnsperf.sh: error: %s\n' "$*" >&2; exit 1; }

# ---- dnsperf and the binaries ----

if ! command -v dnsperf >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    say "installing dnsperf (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y dnsperf; then
        $SUDO apt-get update
        $SUDO apt-get install -y dnsperf
    fi
fi
command -v dnsperf >/dev/null 2>&1 || die "dnsperf is not installed"

say "building warden and the stub upstream (release)"
(cd "$ROOT" && cargo build --release --bin warden --example stub_upstream)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WARDEN_BIN="$TARGET/warden"
STUB_BIN="$TARGET/examples/stub_upstream"
[ -x "$WARDEN_BIN" ] && [ -x "$STUB_BIN" ] || die "built binaries not found under $TARGET"

# ---- processes, cleanup ----

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warden-dnsperf.XXXXXX")
WARDEN_PID=""
STUB_PID=""

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
    stop "$WARDEN_PID"
    stop "$STUB_PID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        say "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PIN_WARDEN=()
PIN_CLIENT=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    PIN_WARDEN=(taskset -c 0)
    PIN_CLIENT=(taskset -c 1)
    PINNING="Warden on CPU 0; dnsperf and the stub upstream on CPU 1"
else
    PINNING="none (taskset missing or fewer than 2 CPUs)"
fi

if command -v ss >/dev/null 2>&1; then
    for port in "$WARDEN_PORT" "$STUB_PORT"; do
        if ss -Hlnu "sport = :$port" | grep -q . || ss -Hlnt "sport = :$port" | grep -q .; then
            die "port $port is in use (set WARDEN_PORT / STUB_PORT)"
        fi
    done
fi

# ---- inputs ----

# Deterministic shuffle: decorate with awk's seeded rand(), sort, undecorate.
shuffle() { # SEED
    awk -v seed="$1" 'BEGIN { srand(seed) } { printf "%.15f\t%s\n", rand(), $0 }' |
        sort -k1,1 | cut -f2-
}

say "generating a ${RULES}-name block list in $WORK"
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

# (a) blocked: a random sample of listed names, every fifth as a www. subdomain.
shuffle 3 <"$WORK/blocklist.txt" |
    awk -v n="$QUERIES" 'NR > n { next } NR % 5 == 0 { $0 = "www." $0 } { print $0 " A" }' >"$WORK/blocked.queries"
# (b) allowed: names the list does not hold; dnsperf loops over the file, so after the
# warm-up pass every query is answered from Warden's cache.
awk -v n="$ALLOWED" 'BEGIN { for (i = 1; i <= n; i++) printf "allowed-%d.bench.test A\n", i }' \
    >"$WORK/allowed.queries"

cat >"$WORK/warden.toml" <<EOF
# Generated by benches/dnsperf.sh
[server]
listen = ["127.0.0.1:$WARDEN_PORT"]
[server.rate_limit]
qps = 0   # the load generator is one client: measure the server, not the limiter
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"

[upstream]
servers = ["127.0.0.1:$STUB_PORT"]
timeout = "2s"

[categories.bench]
description = "benchmark: $REAL names from the shared lists + $SYNTH synthetic"

[groups.default]
block = ["bench"]

[[lists]]
name = "bench"
category = "bench"
path = "blocklist.txt"
format = "domains"
EOF
# The audit log (on by default) goes to data/audit.sqlite inside the work dir.
if [ "${AUDIT:-on}" = off ]; then
    printf '\n[audit]\nenabled = false\n' >>"$WORK/warden.toml"
fi

# ---- start the stub upstream and Warden ----

wait_for_log() { # FILE PATTERN PID SECONDS
    local i
    for ((i = 0; i < $4 * 20; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { tail -n 20 "$1" >&2; die "process $3 exited early (log: $1)"; }
        sleep 0.05
    done
    tail -n 20 "$1" >&2
    die "timed out after $4 s waiting for '$2' in $1"
}

say "starting the stub upstream on 127.0.0.1:$STUB_PORT"
"${PIN_CLIENT[@]}" "$STUB_BIN" "127.0.0.1:$STUB_PORT" 2>"$WORK/stub.log" &
STUB_PID=$!
wait_for_log "$WORK/stub.log" "stub upstream on" "$STUB_PID" 10

say "starting Warden on 127.0.0.1:$WARDEN_PORT"
LAUNCHED=$(date +%s.%N)
NO_COLOR=1 "${PIN_WARDEN[@]}" "$WARDEN_BIN" serve --config "$WORK/warden.toml" 2>"$WORK/warden.log" &
WARDEN_PID=$!
wait_for_log "$WORK/warden.log" "serving DNS on" "$WARDEN_PID" 300
SEEN=$(date +%s.%N)
# Start-up from the log line's own timestamp (polling only bounds it from above).
READY_LINE=$(grep -m1 "serving DNS on" "$WORK/warden.log" | sed 's/\x1b\[[0-9;]*m//g')
READY=$(date -d "$(awk '{ print $1 }' <<<"$READY_LINE")" +%s.%N 2>/dev/null || echo "$SEEN")
STARTUP=$(awk -v a="$LAUNCHED" -v b="$READY" 'BEGIN { printf "%.2f", b - a }')
LOADED_LINE=$(grep -m1 "rules loaded" "$WORK/warden.log" | sed 's/\x1b\[[0-9;]*m//g' || true)

rss_kb() { awk -v k="$2" '$1 == k ":" { print $2 }' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; } # utime + stime
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
HZ=$(getconf CLK_TCK)
RUN=0
RSS_LOADED=$(rss_kb "$WARDEN_PID" VmRSS)

say "Warden ready after ${STARTUP} s, RSS $(mib "$RSS_LOADED")"
if [ -n "$LOADED_LINE" ]; then say "${LOADED_LINE#*INFO }"; fi

# ---- dnsperf runs ----

# CPU ticks since boot: busy (all CPUs together), and this shell's reaped children.
sys_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
child_ticks() { # sets CHILD (not "$(child_ticks)": a subshell has its own children)
    times >"$WORK/times"
    CHILD=$(awk -v hz="$HZ" 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%.0f", t * hz }' "$WORK/times")
}

# run_dnsperf NAME FILE SECONDS [extra dnsperf flags]: sets QPS LAT SD CPU_US
run_dnsperf() {
    local name=$1 file=$2 secs=$3 out="$WORK/dnsperf-$((++RUN)).out"
    local w0 w1 s0 s1 c0 c1 t0 t1 n_done lost codes cpu
    shift 3
    child_ticks
    c0=$CHILD t0=$(date +%s.%N) w0=$(cpu_ticks "$WARDEN_PID") s0=$(sys_busy)
    timeout $((secs + 60)) "${PIN_CLIENT[@]}" dnsperf -s 127.0.0.1 -p "$WARDEN_PORT" -d "$file" \
        -l "$secs" -c "$CLIENTS" -q "$OUTSTANDING" ${MAX_QPS:+-Q "$MAX_QPS"} "$@" >"$out" 2>&1 ||
        { cat "$out" >&2; die "dnsperf ($name) failed"; }
    t1=$(date +%s.%N) w1=$(cpu_ticks "$WARDEN_PID") s1=$(sys_busy)
    child_ticks
    c1=$CHILD
    kill -0 "$WARDEN_PID" 2>/dev/null || die "Warden died during $name (log: $WORK/warden.log)"
    n_done=$(awk '/Queries completed:/ { print $3 }' "$out")
    lost=$(awk '/Queries lost:/ { print $3 " " $4 }' "$out")
    codes=$(awk -F': *' '/Response codes:/ { print $2 }' "$out")
    QPS=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$out")
    LAT=$(awk '/Average Latency/ { printf "%.3f", $4 * 1000 }' "$out")
    SD=$(awk '/Latency StdDev/ { printf "%.3f", $4 * 1000 }' "$out")
    [ -n "$n_done" ] && [ "$n_done" -gt 0 ] && [ -n "$QPS" ] || { cat "$out" >&2; die "no results from dnsperf ($name)"; }
    CPU_US=$(awk -v d=$((w1 - w0)) -v hz="$HZ" -v n="$n_done" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    # Where the CPU went, in % of one CPU: Warden near 100% means Warden was the limit;
    # "other" well above 0 means something else on the machine disturbed the run.
    cpu=$(awk -v w=$((w1 - w0)) -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
        'BEGIN { f = 100 / hz / (t1 - t0); o = (s - w - c) * f; if (o < 0) o = 0
            printf "Warden %.0f%%, dnsperf %.0f%%, other %.0f%%", w * f, c * f, o }')
    printf '%-28s %s q/s, latency avg %s ms (stddev %s ms), Warden CPU %s µs/query\n' \
        "$name:" "$QPS" "$LAT" "$SD" "$CPU_US"
    printf '%-28s completed %s, lost %s; %s\n' "" "$n_done" "$lost" "$codes"
    printf '%-28s CPU (%% of one CPU): %s\n' "" "$cpu"
}

# Other work on the machine skews everything: measure how busy it is for 1 s first.
cpu_idle() { awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
IDLE0=$(cpu_idle); W0=$(cpu_ticks "$WARDEN_PID"); sleep 1; IDLE1=$(cpu_idle); W1=$(cpu_ticks "$WARDEN_PID")
BUSY=$(awk -v a="$IDLE0" -v b="$IDLE1" 'BEGIN { split(a, x, " "); split(b, y, " ")
    printf "%.0f", 100 * (1 - (y[1] - x[1]) / (y[2] - x[2])) }')
LOAD="${BUSY}% busy before the runs (idle Warden: $((W1 - W0)) ticks/s)"
if [ "$BUSY" -gt 10 ]; then
    say "warning: the machine is not idle ($LOAD): results will be noisy"
fi
echo
echo "dnsperf: -l $DURATION -c $CLIENTS -q $OUTSTANDING${MAX_QPS:+ -Q $MAX_QPS}; pinning: $PINNING; CPUs $LOAD"

run_dnsperf "(a) blocked" "$WORK/blocked.queries" "$DURATION"
A=("$QPS" "$LAT" "$SD" "$CPU_US")

run_dnsperf "(b) warm-up (to upstream)" "$WORK/allowed.queries" 10 -n 2
run_dnsperf "(b) allowed, from cache" "$WORK/allowed.queries" "$DURATION"
B=("$QPS" "$LAT" "$SD" "$CPU_US")

RSS_AFTER=$(rss_kb "$WARDEN_PID" VmRSS)
RSS_PEAK=$(rss_kb "$WARDEN_PID" VmHWM)

echo
echo "| case | QPS | avg latency (± stddev) | CPU µs/query |"
echo "|---|---:|---:|---:|"
echo "| (a) blocked, ${LISTED}-rule list | ${A[0]} | ${A[1]} ms (± ${A[2]}) | ${A[3]} |"
echo "| (b) allowed, from cache | ${B[0]} | ${B[1]} ms (± ${B[2]}) | ${B[3]} |"
echo
echo "Start-up (process start → serving DNS): ${STARTUP} s"
echo "RSS after loading: $(mib "$RSS_LOADED"); after the runs: $(mib "$RSS_AFTER") (peak $(mib "$RSS_PEAK"))"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT + local changes"; fi
echo "Block list: $REAL names from the shared lists + $SYNTH synthetic; audit log ${AUDIT:-on}; pinning: $PINNING"
echo "Warden: $COMMIT; dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2; exit }'); $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
