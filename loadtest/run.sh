#!/usr/bin/env bash
# loadtest/run.sh — the side-by-side load test behind `make loadtest`.
#
# Builds the release binaries, starts natter, natter serving wss:// (its
# certificate from a CA made for the run, which the tester checks), the
# Node.js `ws` peer, the bare fan-out ceiling, two natter instances on Redis
# (and on a Redis with a replica, without and with --redis-min-replicas 1),
# the Socket.IO peer and the tokio peer one after another on free loopback
# ports, runs the same scenarios against each with natter-loadtest (one room
# for natter, node and the ceiling; many rooms for natter, Socket.IO and
# tokio; idle memory for all; natter's HTTP fallback at 1,000 clients), and
# prints one table with natter's ratios to the others and natter-tls's to
# natter, then the fallback's beside natter's WebSocket. Every server it starts
# is stopped by PID on exit. natter also gets the scroll-back row: steady in a
# room natter-seed filled with a million messages, without and with a hundred
# clients paging back through it. Takes about 19 minutes with the defaults;
# the LT_* variables below make it bigger or longer.
#
# Results: $LT_OUT/<server>.jsonl (one JSON object per run), <server>.log
# (the server's output), <server>-*.html (reports), table.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${LT_OUT:-$ROOT/target/loadtest}
SERVERS=${LT_SERVERS:-"natter natter-tls node ceiling natter-redis socketio tokio"}   # natter-redis: two instances on one Redis
CLIENTS=${LT_CLIENTS:-"1000 5000 10000"}     # idle and steady at each count
DELIVERIES=${LT_DELIVERIES:-50000}            # steady: target deliveries/s (rate = this / clients, at least MIN_RATE)
MIN_RATE=${LT_MIN_RATE:-10}                   # steady: never fewer messages/s than this (10 over 10 senders)
SENDERS=${LT_SENDERS:-10}
DURATION=${LT_DURATION:-4}                    # steady: seconds of sending
RAMP_CLIENTS=${LT_RAMP_CLIENTS:-1000}
RAMP_STEPS=${LT_RAMP_STEPS:-10}
# natter's per-IP cap (--max-connections-per-ip, 256 by default) protects a server on
# the internet; every load-test client comes from 127.0.0.1, so natter runs without it.
PER_IP=${LT_PER_IP:-1000000}
RAMP_STEP_SECS=${LT_RAMP_STEP_SECS:-2}
SHOOTOUT_MAX=${LT_SHOOTOUT_MAX:-19000}     # one natter holds 19,936 here (the open-files limit)
SHOOTOUT_BROADCASTS=${LT_SHOOTOUT_BROADCASTS:-20}
SHOOTOUT_ROUNDS=${LT_SHOOTOUT_ROUNDS:-3}   # the shootout's result moves with the machine's load: its spread over rounds
CHURN_CLIENTS=${LT_CHURN_CLIENTS:-1000}
THREADS=${LT_THREADS:-1}
CONNECT_RATE=${LT_CONNECT_RATE:-5000}
MAX_SECONDS=${LT_MAX_SECONDS:-120}            # watchdog per natter-loadtest run
ROOMS_CLIENTS=${LT_ROOMS_CLIENTS:-10000}      # rooms: client i in room i mod ROOMS, every client sends
ROOMS=${LT_ROOMS:-500}
ROOMS_RATE=${LT_ROOMS_RATE:-2000}             # rooms: messages/s, all clients together
ROOMS_RAMP_START=${LT_ROOMS_RAMP_START:-500}
ROOMS_RAMP_FACTOR=${LT_ROOMS_RAMP_FACTOR:-1.5}
ROOMS_RAMP_STEPS=${LT_ROOMS_RAMP_STEPS:-9}
ROOMS_STEP_SECS=${LT_ROOMS_STEP_SECS:-3}
SCROLLBACK_MESSAGES=${LT_SCROLLBACK_MESSAGES:-1000000}  # scroll-back: messages natter-seed puts in the room
SCROLLBACK_CLIENTS=${LT_SCROLLBACK_CLIENTS:-5000}      # scroll-back: the live fleet (MIN_RATE msg/s)
SCROLLBACK_PAGERS=${LT_SCROLLBACK_PAGERS:-100}
SCROLLBACK_PAGE_RATE=${LT_SCROLLBACK_PAGE_RATE:-2}     # pages/s per pager
SCROLLBACK_DURATION=${LT_SCROLLBACK_DURATION:-5}       # seconds of each steady run without or with pagers
SCROLLBACK_ROUNDS=${LT_SCROLLBACK_ROUNDS:-3}           # runs without and with pagers, in turn
RESTART_CLIENTS=${LT_RESTART_CLIENTS:-10000}           # restart: clients connected when natter restarts
RESTART_RATE=${LT_RESTART_RATE:-200}                   # restart: messages/s, all clients together, throughout

LT=$ROOT/target/release/natter-loadtest
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.log "$OUT"/*.err "$OUT/bytes.txt"
# The tester offers permessage-deflate unless told not to: every row runs without it
# (as the peers do), and the deflate rows (issue 27) set DEFLATE= to run with it.
DEFLATE=--no-deflate
# 10,000 clients and as many server connections on one machine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
DATA_DIRS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for d in "${DATA_DIRS[@]}"; do
        rm -rf "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }

say "building release binaries"
if ! cargo build --release --workspace --quiet; then
    # The server is written in parallel with its load test: measure the
    # peers anyway, and say loudly that natter is missing.
    say "WARNING: the workspace does not build; running without natter"
    cargo build --release -p natter-loadtest --quiet
    SERVERS=$(printf '%s\n' $SERVERS | grep -v '^natter' | tr '\n' ' ' || true)
fi
# The tokio peer is its own workspace (tokio stays out of natter's lock file).
cargo build --release --quiet --manifest-path loadtest/peers/tokio-rooms/Cargo.toml --target-dir target
for peer in node-ws socketio; do
    if [ ! -d loadtest/peers/$peer/node_modules ]; then
        say "installing the $peer peer's packages"
        (cd loadtest/peers/$peer && npm ci --no-audit --no-fund --loglevel=error)
    fi
done

load=$(cut -d' ' -f1 /proc/loadavg)
say "machine load average before the runs: $load (other work on the machine skews every number)"

# start NAME CMD...: run a server, wait for its ready line (at most 10 s),
# set SERVER_PID and SERVER_URL from the ws:// or wss:// URL it prints.
start() {
    local name=$1
    shift
    "$@" >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_URL=
    for _ in $(seq 100); do
        SERVER_URL=$(grep -oE 'wss?://[^ ]*' "$OUT/$name.log" | head -1 || true)
        [ -n "$SERVER_URL" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    say "$name did not start; its output:"
    cat "$OUT/$name.log" >&2
    return 1
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# lt NAME SCENARIO ARGS...: one natter-loadtest run, appended to NAME.jsonl.
lt() {
    local name=$1 scenario=$2
    shift 2
    say "  $name: $scenario $*"
    if ! "$LT" "$scenario" --label "$name" --url "$URL" ${URL2:+--url "$URL2"} ${CA:+--ca "$CA"} $AWAIT $ENGINE_IO \
        --join "$JOIN" --msg "$MSG" $DEFLATE \
        --server-pid "$SERVER_PID" --threads "$THREADS" --connect-rate "$CONNECT_RATE" \
        --senders "$SENDERS" --json --quiet --max-seconds "$MAX_SECONDS" "$@" \
        >>"$OUT/$name.jsonl" 2>>"$OUT/$name.err"; then
        say "  $name: $scenario failed; see $OUT/$name.err"
    fi
}

# steady NAME CLIENTS [ARGS...]: fixed load, DELIVERIES/s or MIN_RATE msg/s, whichever is more.
steady() {
    local name=$1 n=$2 rate=$((DELIVERIES / $2))
    shift 2
    [ "$rate" -lt "$MIN_RATE" ] && rate=$MIN_RATE
    lt "$name" steady --clients "$n" --rate "$rate" --duration "$DURATION" --report "$OUT/$name-steady-$n.html" "$@"
}

# fallback_row: natter's HTTP fallback (issue 17) against the same natter: steady at
# 1,000 clients reading GET /sse and posting with POST /send, labelled natter-sse so
# the fallback table sets it beside natter's WebSocket steady 1000 (run here too if
# LT_CLIENTS has no 1000).
fallback_row() {
    case " $CLIENTS " in
    *" 1000 "*) ;;
    *) steady natter 1000 ;;
    esac
    steady natter-sse 1000 --transport sse
}

# ramp NAME: RAMP_CLIENTS clients, the rate doubling every step until p99 passes the bound or one is lost.
ramp() {
    lt "$1" ramp --clients "$RAMP_CLIENTS" --ramp-start 25 --ramp-factor 2 \
        --max-steps "$RAMP_STEPS" --step-secs "$RAMP_STEP_SECS" --drain-ms 1000
}

# rooms NAME [ARGS...]: ROOMS_CLIENTS clients in ROOMS rooms at ROOMS_RATE, then the ramp.
rooms() {
    local name=$1
    shift
    lt "$name" rooms --clients "$ROOMS_CLIENTS" --rooms "$ROOMS" --rate "$ROOMS_RATE" --duration "$DURATION" "$@"
    rooms_ramp "$name" "$@"
}

rooms_ramp() {
    local name=$1
    shift
    lt "$name" rooms-ramp --clients "$ROOMS_CLIENTS" --rooms "$ROOMS" --ramp-start "$ROOMS_RAMP_START" \
        --ramp-factor "$ROOMS_RAMP_FACTOR" --max-steps "$ROOMS_RAMP_STEPS" --step-secs "$ROOMS_STEP_SECS" \
        --drain-ms 1000 --report "$OUT/$name-rooms-ramp${1:+-${2//=/-}}.html" "$@"
}

# bytes_rows: bytes on the wire per delivered message, plain and with permessage-deflate
# (issue 27): 1,100 live messages of varied chat text, a join's history (50), a resume
# of 1,000; then the rooms rows with the tester's clients negotiating deflate.
bytes_rows() {
    say "  natter: bytes"
    if ! "$LT" bytes --label natter --url "$URL" --senders "$SENDERS" --max-seconds "$MAX_SECONDS" \
        >"$OUT/bytes.txt" 2>>"$OUT/natter.err"; then
        say "  natter: bytes failed; see $OUT/natter.err"
    fi
    DEFLATE= rooms natter --variant deflate=on
}

idle_all() {
    local n
    for n in $CLIENTS; do
        lt "$1" idle --clients "$n" --hold 2
    done
}

# api_rows: the server API and webhooks, against one natter with both on: the
# witness posting through the API at 1,000 clients (an API post's latency, request to
# seen by a WebSocket client), steady 5,000 with 1,000 API posts/s beside it, and
# 5,000 msg/s with a webhook receiver that answers in 50 ms (its queue sampled).
api_rows() {
    local data keys port rpid admin
    data=$(mktemp -d) keys=$(mktemp)
    DATA_DIRS+=("$data" "$keys")
    echo "loadtest-api-key-0123456789" >"$keys"
    port=$(free_port)
    python3 loadtest/peers/webhook-receiver.py "$port" &
    rpid=$!
    PIDS+=("$rpid")
    start natter-api target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
        --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 --api-key-file "$keys" --api-rate-per-s 100000 \
        --webhook "http://127.0.0.1:$port/hook" --webhook-secret-file "$keys"
    URL="$SERVER_URL?name=lt"
    admin=$(grep -o 'admin=http://[^ ]*' "$OUT/natter-api.log" 2>/dev/null | head -1 | sed 's|admin=http://||')
    local api=(--api "$admin" --api-key loadtest-api-key-0123456789)
    lt natter steady --clients 1000 --rate 50 --duration "$DURATION" --variant witness=websocket "${api[@]}"
    lt natter steady --clients 1000 --rate 50 --duration "$DURATION" --variant witness=api "${api[@]}" --witness-via-api
    lt natter steady --clients 5000 --rate 10 --duration "$DURATION" --variant api-posts=1000/s "${api[@]}" --api-rate 1000
    local before queue_max=0 q
    before=$(curl -s "http://127.0.0.1:$port/" || true)
    ( for _ in $(seq $((DURATION * 4 + 8))); do
        curl -s "http://$admin/metrics" | awk '/^natter_webhook_queue /{print $2}'; sleep 0.25; done ) >"$OUT/webhook-queue.txt" &
    local sampler=$!
    lt natter steady --clients 10 --rate 5000 --duration "$DURATION" --witness-rate 0 --variant webhook-50ms  # 10 senders: SENDERS
    wait "$sampler" 2>/dev/null || true
    queue_max=$(sort -n "$OUT/webhook-queue.txt" | tail -1)
    say "  webhooks: receiver before $before, after $(curl -s "http://127.0.0.1:$port/"); queue max ${queue_max:-?};" \
        "$(curl -s "http://$admin/metrics" | grep -E '^natter_webhook_(events_dropped|posts_failed)_total' | tr '\n' ' ')"
    stop
    kill "$rpid" 2>/dev/null || true
}

# scrollback_rows: steady at SCROLLBACK_CLIENTS and MIN_RATE msg/s in a room that
# natter-seed filled with SCROLLBACK_MESSAGES messages (through natter's own store
# writer, a few seconds), without and then with SCROLLBACK_PAGERS clients paging back
# through it (`history`, 50 and 100 a page), SCROLLBACK_ROUNDS times in turn after a
# warm-up, on one server: this machine is shared, and one pair of runs differs by
# more than the 20% asked even with no pager paging (docs/PERFORMANCE.md). The fleet
# chats in the paged room itself: its commits and the pagers' reads meet in the same
# table, index and dispatcher, and the pagers get the live messages like any member.
scrollback_rows() {
    local data
    data=$(mktemp -d)
    DATA_DIRS+=("$data")
    say "  seeding $SCROLLBACK_MESSAGES messages into room archive"
    target/release/natter-seed --data-dir "$data" --room archive --messages "$SCROLLBACK_MESSAGES"
    start natter-scrollback target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
        --data-dir "$data" --rate-per-s 100000 --rate-burst 100000
    URL="$SERVER_URL?name=lt" AWAIT=--await-joined
    JOIN='{"type":"join","room":"$ROOM"}'
    MSG='{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID"}'
    lt natter steady --clients "$SCROLLBACK_CLIENTS" --rate "$MIN_RATE" --duration "$SCROLLBACK_DURATION" \
        --room archive --pagers "$SCROLLBACK_PAGERS" --page-rate "$SCROLLBACK_PAGE_RATE" \
        --pager-rounds "$SCROLLBACK_ROUNDS" \
        --variant scrollback --report "$OUT/natter-scrollback.html"
    stop
    rm -rf "$data"
}

# restart_rows: RESTART_CLIENTS clients in ROOMS rooms, all sending (RESTART_RATE msg/s
# in total), and natter restarted under them: SIGTERM, then the binary started again on
# the same port and data dir (an upgrade puts the new binary in its place). The row is
# the time from the SIGTERM until every client is back and has resumed (join with since
# and epoch, its history's last page in), and how many acked messages a member missed
# or got twice. Plain, then wss:// with session tickets (labelled natter-tls).
restart_rows() {
    local mode name data certs port tls cmd newpid
    for mode in plain tls; do
        data=$(mktemp -d)
        DATA_DIRS+=("$data")
        port=$(free_port)
        tls=() CA= name=natter
        if [ "$mode" = tls ]; then
            certs=$(mktemp -d)
            DATA_DIRS+=("$certs")
            target/release/natter-test-ca "$certs"
            tls=(--tls-cert "$certs/server.crt" --tls-key "$certs/server.key")
            CA=$certs/ca.pem name=natter-tls
        fi
        cmd=(target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port "$port" --max-connections-per-ip "$PER_IP"
            --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 "${tls[@]}")
        start "natter-restart-$mode" "${cmd[@]}"
        URL="$SERVER_URL?name=lt"
        # The restart: SIGTERM, wait until the old process is gone (a zombie of this
        # shell counts as gone), start the same binary again, return once it listens.
        cat >"$OUT/restart-$mode.sh" <<EOS
#!/usr/bin/env bash
kill -TERM $SERVER_PID
while [ -e /proc/$SERVER_PID ] && ! grep -q '^State:.*Z' /proc/$SERVER_PID/status 2>/dev/null; do sleep 0.01; done
${cmd[*]} >"$OUT/natter-restart-$mode-2.log" 2>&1 &
echo \$! >"$OUT/restart-$mode.pid"
for _ in \$(seq 1000); do grep -q 'wss\?://' "$OUT/natter-restart-$mode-2.log" && exit 0; sleep 0.01; done
exit 1
EOS
        lt "$name" restart --clients "$RESTART_CLIENTS" --rooms "$ROOMS" --rate "$RESTART_RATE" --duration 2 \
            --witness-rate 0 --restart-cmd "bash $OUT/restart-$mode.sh"
        wait "$SERVER_PID" 2>/dev/null || true
        newpid=$(cat "$OUT/restart-$mode.pid" 2>/dev/null || true)
        if [ -n "$newpid" ]; then
            kill "$newpid" 2>/dev/null || true
            while [ -e "/proc/$newpid" ]; do sleep 0.05; done
        fi
    done
    CA=
}

# redis_replicated_rows NAME: a Redis master with one replica, then two natter
# instances on it for each --redis-min-replicas of 0 and 1, each running the rooms
# rows labelled replica=1 and min-replicas=1; every process is stopped by PID after.
redis_replicated_rows() {
    local name=$1 mport rport n i data pids=() urls
    mport=$(free_port) rport=$(free_port)
    redis-server --port "$mport" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis-master.log" 2>&1 &
    PIDS+=("$!") pids+=("$!")
    for _ in $(seq 50); do redis-cli -p "$mport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    # --dir: a replica's full sync writes the master's data to a file; keep it out of the repo.
    data=$(mktemp -d)
    DATA_DIRS+=("$data")
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$data" --replicaof 127.0.0.1 "$mport" \
        >"$OUT/redis-replica.log" 2>&1 &
    PIDS+=("$!") pids+=("$!")
    for _ in $(seq 100); do
        redis-cli -p "$rport" info replication 2>/dev/null | grep -q 'master_link_status:up' && break
        sleep 0.1
    done
    for n in 0 1; do
        urls=()
        local instances=()
        for i in 1 2; do
            data=$(mktemp -d)
            DATA_DIRS+=("$data")
            start "natter-redis-wait$n-$i" target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 \
                --max-connections-per-ip "$PER_IP" --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 \
                --redis "redis://127.0.0.1:$mport/0" --redis-min-replicas "$n"
            urls+=("$SERVER_URL?name=lt")
            instances+=("$SERVER_PID")
        done
        URL=${urls[0]} URL2=${urls[1]}
        if [ "$n" = 0 ]; then rooms "$name" --variant replica=1; else rooms "$name" --variant min-replicas=1; fi
        unset URL2
        for pid in "${instances[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run_scenarios() {
    local name=$1 n
    idle_all "$name"
    for n in $CLIENTS; do
        steady "$name" "$n"
    done
    ramp "$name"
    # natter-tls is compared with these rows: it runs right after them, on the
    # same machine minutes (the load of a shared machine drifts).
    if [ "$name" = natter ] && [[ " $SERVERS " == *" natter-tls "* ]]; then tls_rows; fi
    lt "$name" churn --clients "$CHURN_CLIENTS" --rate "$((DELIVERIES / CHURN_CLIENTS))" --duration "$DURATION"
    # Rounds: one step over the bound ends a round, and on a shared machine that step
    # moves from run to run; the table shows min, median and max over the rounds.
    local round
    for round in $(seq "$SHOOTOUT_ROUNDS"); do
        lt "$name" shootout --max-clients "$SHOOTOUT_MAX" --broadcasts "$SHOOTOUT_BROADCASTS" \
            --report "$OUT/$name-shootout-$round.html"
    done
}

# tls_rows: natter-tls's rows (from plain natter's, between its ramp and churn);
# plain natter's server and settings are kept and put back.
tls_rows() {
    local plain_pid=$SERVER_PID plain_url=$URL certs data n
    # What TLS costs natter: the same flags and rows as plain natter, over wss://
    # with a certificate from a CA made for this run, which every client checks.
    certs=$(mktemp -d) data=$(mktemp -d)
    DATA_DIRS+=("$certs" "$data")
    target/release/natter-test-ca "$certs"
    start natter-tls target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
        --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 \
        --tls-cert "$certs/server.crt" --tls-key "$certs/server.key"
    URL="$SERVER_URL?name=lt" CA=$certs/ca.pem
    idle_all natter-tls
    for n in $CLIENTS; do
        if [ "$n" -le 5000 ]; then steady natter-tls "$n"; fi
    done
    ramp natter-tls
    stop
    CA= URL=$plain_url SERVER_PID=$plain_pid
}

ENGINE_IO= CA=
for server in $SERVERS; do
    say "== $server"
    case $server in
    natter-redis)
        # Two natter instances sharing rooms through one Redis; clients alternate.
        scripts/ensure-redis.sh
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
        PIDS+=("$!")
        cluster_pids=("$!")
        for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
        urls=()
        for i in 1 2; do
            data=$(mktemp -d)
            DATA_DIRS+=("$data")
            start "natter-redis-$i" target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
                --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 --redis "redis://127.0.0.1:$rport/0"
            urls+=("$SERVER_URL?name=lt")
            cluster_pids+=("$SERVER_PID")
        done
        URL=${urls[0]} URL2=${urls[1]} AWAIT=--await-joined
        JOIN='{"type":"join","room":"$ROOM"}'
        MSG='{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID"}'
        for n in $CLIENTS; do
            [ "$n" -le 5000 ] && steady "$server" "$n"
        done
        # Issue 16 item 5: many rooms across the two instances (clients alternate).
        rooms "$server"
        unset URL2
        for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
        # Issue 24 item 2: what --redis-min-replicas costs. A fresh Redis with one
        # replica; the rooms rows without WAIT (the replica's own cost) and with
        # --redis-min-replicas 1 (one WAIT per pipeline of appends).
        redis_replicated_rows "$server"
        continue
        ;;
    natter)
        data=$(mktemp -d)
        DATA_DIRS+=("$data")
        # The per-connection rate limit (20/s by default) would cap the ramp,
        # not the fan-out being measured: lift it for the load test.
        start natter target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
            --data-dir "$data" --rate-per-s 100000 --rate-burst 100000
        URL="$SERVER_URL?name=lt" AWAIT=--await-joined
        JOIN='{"type":"join","room":"$ROOM"}'
        MSG='{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID"}'
        run_scenarios "$server"
        fallback_row
        rooms "$server"
        bytes_rows
        stop
        scrollback_rows
        api_rows
        restart_rows
        # Group commit: one fsync per dispatcher batch.
        data=$(mktemp -d)
        DATA_DIRS+=("$data")
        start natter-always target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --max-connections-per-ip "$PER_IP" \
            --data-dir "$data" --rate-per-s 100000 --rate-burst 100000 --fsync always
        URL="$SERVER_URL?name=lt"
        rooms natter --variant fsync=always
        stop
        continue
        ;;
    natter-tls)
        # Runs inside natter's rows (tls_rows); alone only when natter is not listed.
        if [[ " $SERVERS " != *" natter "* ]]; then
            AWAIT=--await-joined JOIN='{"type":"join","room":"$ROOM"}'
            MSG='{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID"}'
            tls_rows
        fi
        continue
        ;;
    socketio)
        start socketio node loadtest/peers/socketio/server.js 0
        URL=$SERVER_URL AWAIT=--await-joined ENGINE_IO=--engine-io
        JOIN='42["join",{"room":"$ROOM"}]' MSG='42["msg",{"room":"$ROOM","text":"$TEXT"}]'
        idle_all "$server"
        rooms "$server"
        stop
        ENGINE_IO=
        continue
        ;;
    tokio)
        start tokio target/release/tokio-rooms 0
        URL=$SERVER_URL AWAIT=--await-joined
        JOIN='{"type":"join","room":"$ROOM"}'
        MSG='{"type":"msg","room":"$ROOM","text":"$TEXT"}'
        idle_all "$server"
        rooms "$server"
        stop
        # The read buffer natter chose for itself (2 KiB), for the memory row only.
        start tokio-2k target/release/tokio-rooms 0 2048
        URL=$SERVER_URL
        for n in $CLIENTS; do
            lt tokio idle --clients "$n" --hold 2 --variant read-buffer=2KiB
        done
        stop
        continue
        ;;
    node)
        AWAIT=
        start node node loadtest/peers/node-ws/server.js 0
        URL=$SERVER_URL JOIN='' MSG='{"user":"lt","text":"$TEXT"}'
        ;;
    ceiling)
        AWAIT=
        start ceiling target/release/natter-ceiling --bind 127.0.0.1 --port 0
        URL=$SERVER_URL JOIN='' MSG='{"text":"$TEXT"}'
        ;;
    *)
        say "unknown server $server"
        exit 2
        ;;
    esac
    run_scenarios "$server"
    stop
done

inputs=()
ratios=()
for server in $SERVERS; do
    inputs+=(--input "$server=$OUT/$server.jsonl")
    # What TLS costs: natter-tls's figures over plain natter's.
    if [ "$server" = natter-tls ]; then ratios+=(--ratio natter-tls/natter); fi
done
"$LT" compare "${inputs[@]}" --ratio-to node --ratio-to ceiling --ratio-to socketio --ratio-to tokio "${ratios[@]}" \
    | tee "$OUT/table.txt"
if [ -s "$OUT/natter-sse.jsonl" ]; then
    echo "HTTP fallback: natter over GET /sse + POST /send, beside natter over WebSocket (same server, same run)" | tee -a "$OUT/table.txt"
    "$LT" compare --input natter-sse="$OUT/natter-sse.jsonl" --input natter="$OUT/natter.jsonl" --rows-of-first | tee -a "$OUT/table.txt"
fi
if [ -s "$OUT/bytes.txt" ]; then
    echo "permessage-deflate: natter, the tester's clients without and with it (same server, same run)" | tee -a "$OUT/table.txt"
    tee -a "$OUT/table.txt" <"$OUT/bytes.txt"
fi
charts=()
for server in $SERVERS; do
    [ -s "$OUT/$server.jsonl" ] && charts+=("$server=$OUT/$server.jsonl")
done
python3 loadtest/chart.py "$OUT/latency-vs-clients.svg" "${charts[@]}" || say "no latency chart"
python3 loadtest/chart.py --rooms-ramp "$OUT/rooms-ramp.svg" "${charts[@]}" || say "no rooms-ramp chart"
echo "machine load average: $load before, $(cut -d' ' -f1 /proc/loadavg) after; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$OUT/table.txt"
say "results in $OUT"
