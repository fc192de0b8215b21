#!/usr/bin/env bash
# scripts/autobahn.sh — Autobahn|Testsuite's fuzzing client against natter (`make autobahn`).
#
# Sets the suite up if it is missing: a Python 2.7 virtualenv (the suite runs on
# nothing newer) under target/autobahn/, with upstream's pinned requirements read from
# the autobahntestsuite sdist on PyPI, then the suite itself. Then two runs, each
# against its own natter on loopback (open mode, a fresh data dir):
#
# - chat: default flags, `wstest -m fuzzingclient` against
#   ws://127.0.0.1:PORT/ws?name=autobahn, the cases a chat endpoint can be judged on
#   (docs/AUTOBAHN.md says why);
# - echo: `--autobahn-echo --max-frame-bytes 16777216` (the suite's largest message is
#   16 MiB), every case against ws://127.0.0.1:PORT/echo, the conformance echo that
#   runs through the chat connection's own handshake, permessage-deflate, framing,
#   limits and writer.
#
# The suite is the slow side (CPython 2.7, one case at a time, one message at a time:
# chapters 12 and 13 send 216,000 messages), so a run is split into batches of
# disjoint cases (scripts/autobahn_cases.py, costliest first) that AB_SHARDS wstest
# processes take in turn against the one natter, each batch bounded by what is left of
# AB_MAX_SECONDS; the batches' reports are then merged into one. Every process is
# stopped by its PID.
#
# Each natter is stopped by its PID; each run prints one line per case group: how
# many cases the suite judged OK, NON-STRICT, INFORMATIONAL, FAILED, UNIMPLEMENTED,
# and the same for the closing handshake alone.
#
# Results: $AB_OUT/{chat,echo}/: spec.json (the spec it generated), reports/ (the
# suite's HTML and JSON over all batches, reports/index.html to browse), natter.log,
# batches/batch-K/{spec.json,wstest.log}, summary.txt.
#
#   AB_RUNS         which runs (default "chat echo")
#   AB_CASES        chat cases to run (default "*")
#   AB_EXCLUDE      chat cases left out (default "9.* 12.* 13.*": docs/AUTOBAHN.md says why)
#   AB_ECHO_CASES   echo cases to run (default "*")
#   AB_ECHO_EXCLUDE echo cases left out (default none)
#   AB_PYTHON27     a CPython 2.7 interpreter (default: pyenv's 2.7.x, then python2.7)
#   AB_HOME         where the virtualenvs live (default target/autobahn)
#   AB_OUT          where the runs' files go (default target/autobahn/run)
#   AB_SHARDS       wstest processes at once for the echo (default: the machine's cores)
#   AB_CHAT_SHARDS  the same for the chat endpoint (default 1: its cases share a room)
#   AB_MAX_SECONDS  bound on each run, all its batches together (default 2400: the echo
#                   took 885-1,223 s with 2 processes on 2 cores at a load average of 12)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
HOME_DIR=${AB_HOME:-$ROOT/target/autobahn}
OUT=${AB_OUT:-$HOME_DIR/run}
CASES=${AB_CASES:-"*"}
EXCLUDE=${AB_EXCLUDE-"9.* 12.* 13.*"}
ECHO_CASES=${AB_ECHO_CASES:-"*"}
ECHO_EXCLUDE=${AB_ECHO_EXCLUDE-""}
RUNS=${AB_RUNS:-"chat echo"}
MAX_SECONDS=${AB_MAX_SECONDS:-2400}
SHARDS=${AB_SHARDS:-$(nproc)}
CHAT_SHARDS=${AB_CHAT_SHARDS:-1}
SUITE_VERSION=25.10.1
VIRTUALENV_VERSION=20.21.1
PY2=$HOME_DIR/py27
WSTEST=$PY2/bin/wstest

say() { printf '%s\n' "$*" >&2; }

find_python27() {
    if [ -n "${AB_PYTHON27:-}" ]; then
        echo "$AB_PYTHON27"
        return
    fi
    local p
    for p in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/2.7.*/bin/python /usr/bin/python2.7; do
        if [ -x "$p" ]; then
            echo "$p"
            return
        fi
    done
    command -v python2.7 || true
}

setup() {
    local py27 tools=$HOME_DIR/virtualenv dl=$HOME_DIR/sdist
    py27=$(find_python27)
    if [ -z "$py27" ]; then
        say "no CPython 2.7 found (the suite needs it): set AB_PYTHON27, e.g. to a pyenv 2.7.18's bin/python"
        exit 2
    fi
    say "setting up Autobahn|Testsuite $SUITE_VERSION under $HOME_DIR with $py27"
    rm -rf "$PY2" "$dl"
    # virtualenv from a Python 3 venv: the last virtualenv that still makes 2.7 environments.
    if [ ! -x "$tools/bin/virtualenv" ]; then
        python3 -m venv "$tools"
        "$tools/bin/pip" install --quiet "virtualenv==$VIRTUALENV_VERSION"
    fi
    "$tools/bin/virtualenv" --quiet -p "$py27" "$PY2"
    # Upstream's pins (Twisted 19.10.0, autobahn 0.10.9, ...) as the sdist records them.
    "$tools/bin/pip" download --quiet --no-deps --no-binary :all: -d "$dl" "autobahntestsuite==$SUITE_VERSION"
    tar -xzf "$dl/autobahntestsuite-$SUITE_VERSION.tar.gz" -C "$dl"
    grep -v '^\s*$' "$dl/autobahntestsuite-$SUITE_VERSION/autobahntestsuite.egg-info/requires.txt" >"$dl/requirements.txt"
    "$PY2/bin/pip" install --quiet --no-build-isolation -r "$dl/requirements.txt"
    "$PY2/bin/pip" install --quiet --no-deps "autobahntestsuite==$SUITE_VERSION"
}

export PIP_NO_PYTHON_VERSION_WARNING=1
if ! "$WSTEST" --autobahnversion >/dev/null 2>&1; then
    setup
fi

say "building natter"
cargo build --release -p natter --quiet

NATTER_PID=
DATA=
WORKERS=()
BATCHES=
cleanup() {
    local pid f
    for pid in "${WORKERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Each batch's `timeout` (its PID in the batch's dir) passes the signal to its wstest.
    if [ -n "$BATCHES" ]; then
        for f in "$BATCHES"/batch-*/pid; do
            [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
        done
    fi
    for pid in "${WORKERS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    WORKERS=()
    BATCHES=
    if [ -n "$NATTER_PID" ]; then
        kill "$NATTER_PID" 2>/dev/null || true
        wait "$NATTER_PID" 2>/dev/null || true
    fi
    if [ -n "$DATA" ]; then
        rm -rf "$DATA"
    fi
    NATTER_PID=
    DATA=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets CPU to the CPU seconds (user + system) of this shell's children that have ended
# and been waited for (`times` must run in this shell, not in a command substitution).
CPU=0
children_cpu() {
    times >"$OUT/.times"
    CPU=$(tail -1 "$OUT/.times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } printf "%.0f", s }')
}

# worker DIR DEADLINE: runs the batches under DIR that no other worker has claimed
# (mkdir claims one), each bounded by what is left until DEADLINE (epoch seconds).
worker() {
    local dir=$1 deadline=$2 b left status
    for b in "$dir"/batch-*; do
        mkdir "$b/claimed" 2>/dev/null || continue
        left=$((deadline - $(date +%s)))
        if [ "$left" -le 0 ]; then
            echo "not started: out of time" >"$b/wstest.log"
            continue
        fi
        # In the batch's dir: whatever wstest leaves in its working directory stays there.
        (cd "$b" && exec timeout "$left" "$WSTEST" -m fuzzingclient -s "$b/spec.json" >"$b/wstest.log" 2>&1) &
        echo $! >"$b/pid"
        status=0
        wait $! || status=$?
        rm -f "$b/pid"
        echo "$status" >"$b/status"
        [ "$status" -eq 0 ] || say "[$(basename "$(dirname "$dir")")] $(basename "$b"): wstest ended with status $status (its output: $b/wstest.log)"
    done
}

# run NAME PATH CASES EXCLUDE SHARDS [natter flags...]: one natter, the cases split into
# batches run by SHARDS wstest processes at a time, one merged report, one summary.
run() {
    local name=$1 path=$2 cases=$3 exclude=$4 shards=$5
    shift 5
    local out=$OUT/$name url=
    mkdir -p "$out"
    rm -rf "$out/reports" "$out/batches"
    DATA=$(mktemp -d)
    target/release/natter serve --bind 127.0.0.1 --http-port 0 --ws-port 0 --data-dir "$DATA" "$@" >"$out/natter.log" 2>&1 &
    NATTER_PID=$!
    for _ in $(seq 100); do
        url=$(grep -oE 'ws://[^ /]*' "$out/natter.log" 2>/dev/null | head -1 || true)
        [ -n "$url" ] && break
        kill -0 "$NATTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ]; then
        say "natter did not start; its output:"
        cat "$out/natter.log" >&2
        exit 1
    fi
    python3 - "$out/spec.json" "$url$path" "$out/reports" "$cases" "$exclude" "natter-$name" <<'EOF'
import json, sys
path, url, reports, cases, exclude, agent = sys.argv[1:]
spec = {
    "outdir": reports,
    "servers": [{"agent": agent, "url": url}],
    "cases": cases.split(),
    "exclude-cases": exclude.split(),
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
EOF
    # Four batches a process: a batch cut by the bound loses only its own reports, and
    # the last batches to finish end close together.
    local split batches=$((shards > 1 ? shards * 4 : 1)) started i merged cpu_before suite_cpu natter_cpu
    split=$("$PY2/bin/python" scripts/autobahn_cases.py split "$out/spec.json" "$out/batches" "$batches")
    say "[$name] running wstest -m fuzzingclient against $url$path: ${split#* } cases in ${split%% *} batches, $shards at a time, bound ${MAX_SECONDS} s (spec $out/spec.json; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    started=$(date +%s)
    children_cpu
    cpu_before=$CPU
    BATCHES=$out/batches
    for i in $(seq "$shards"); do
        worker "$out/batches" $((started + MAX_SECONDS)) &
        WORKERS+=($!)
    done
    for i in "${WORKERS[@]}"; do
        wait "$i" || true
    done
    WORKERS=()
    local took=$(($(date +%s) - started)) load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    # Who was busy: the suite's processes (waited for) and natter (still running).
    children_cpu
    suite_cpu=$((CPU - cpu_before))
    natter_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15) / hz }' "/proc/$NATTER_PID/stat")
    say "[$name] wstest took $took s (load average $load)"
    cleanup
    merged=$("$PY2/bin/python" scripts/autobahn_cases.py merge "$out/reports" "$out"/batches/batch-*)
    echo "== $name: $url$path"
    # The verdicts without natter's JSON frames are for the chat endpoint only.
    python3 - "$out/reports" "natter-$name" "$([ "$name" = chat ] && echo own)" <<'EOF' | tee "$out/summary.txt"
# Two verdicts per case. The suite's own: on a chat endpoint most cases fail it only
# because natter speaks first (its welcome) and answers text with JSON instead of an
# echo. And the same events without natter's own JSON frames: "pass" when they then
# match what the suite expects, "echo" when all that is missing is the echo of the
# suite's message, "FAIL" otherwise or when the closing handshake failed. "close" is the suite's verdict on the closing
# handshake alone (code, who closed, cleanly). docs/AUTOBAHN.md explains each group.
import json, os, sys
from collections import Counter, OrderedDict

reports, agent, own_columns = sys.argv[1], sys.argv[2], sys.argv[3] == "own"
SUITE = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]
OWN = ["pass", "echo", "FAIL"]

def natters_own(event):
    # The report keeps only the start of a long frame: natter's own are JSON with "type" first.
    return event[0] == "message" and not event[2] and event[1].startswith('{"type":"')

def own_verdict(case):
    if case["behavior"] in ("INFORMATIONAL", "UNIMPLEMENTED"):
        return case["behavior"]
    if case["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        return "FAIL"
    got = [e for e in case["received"] if not natters_own(e)]
    expected = case["expected"].values()
    if any(got == e for e in expected):
        return "pass"
    if any(got == [x for x in e if x[0] != "message"] for e in expected):
        return "echo"
    return "FAIL"

with open(os.path.join(reports, "index.json")) as f:
    index = json.load(f)[agent]
groups = OrderedDict()
for case_id in sorted(index, key=lambda c: [int(p) for p in c.split(".")]):
    with open(os.path.join(reports, index[case_id]["reportfile"])) as f:
        case = json.load(f)
    # The suite's chapters (1 framing, 2 pings, 3 reserved bits, 4 opcodes, 5
    # fragmentation, 6 UTF-8, 7 closing, 9 limits, 10 misc, 12-13 compression); the
    # closing chapter by section, whose cases test different things.
    parts = case_id.split(".")
    groups.setdefault(".".join(parts[:2] if parts[0] == "7" else parts[:1]), []).append(case)

if own_columns:
    print("%-6s %5s | %-44s | %-30s | %s" % ("", "", "the suite's verdict", "without natter's JSON frames", "closing"))
    print("%-6s %5s | %8s %10s %6s %6s %6s | %6s %6s %5s %5s %4s | %5s %5s" % (
        "group", "cases", "OK", "NON-STRICT", "INFO", "FAILED", "UNIMPL", "pass", "echo", "FAIL", "INFO", "UN",
        "OK", "other"))
else:
    print("%-6s %5s | %-44s | %s" % ("", "", "the suite's verdict", "closing"))
    print("%-6s %5s | %8s %10s %6s %6s %6s | %5s %5s" % (
        "group", "cases", "OK", "NON-STRICT", "INFO", "FAILED", "UNIMPL", "OK", "other"))
total_suite, total_own, total_close, n = Counter(), Counter(), Counter(), 0

def row(name, count, suite, own, close):
    if not own_columns:
        print("%-6s %5d | %8d %10d %6d %6d %6d | %5d %5d" % (
            (name, count) + tuple(suite[k] for k in SUITE) + (close["OK"], close["other"])))
        return
    print("%-6s %5d | %8d %10d %6d %6d %6d | %6d %6d %5d %5d %4d | %5d %5d" % (
        (name, count) + tuple(suite[k] for k in SUITE)
        + tuple(own[k] for k in OWN + ["INFORMATIONAL", "UNIMPLEMENTED"])
        + (close["OK"], close["other"])))

for group, cases in groups.items():
    suite = Counter(c["behavior"] for c in cases)
    own = Counter(own_verdict(c) for c in cases)
    close = Counter("OK" if c["behaviorClose"] in ("OK", "INFORMATIONAL") else "other" for c in cases)
    row(group, len(cases), suite, own, close)
    total_suite.update(suite), total_own.update(own), total_close.update(close)
    n += len(cases)
row("all", n, total_suite, total_own, total_close)
EOF
    {
        echo "$took s for ${split#* } cases (${split%% *} batches, $shards wstest at a time), load average $load at the end; CPU: wstest $suite_cpu s, natter $natter_cpu s"
        [ -z "${merged#* }" ] || echo "no verdict (a batch cut by the bound) for: ${merged#* }"
    } | tee -a "$out/summary.txt"
    say "[$name] reports: $out/reports/index.html; summary: $out/summary.txt"
}

mkdir -p "$OUT"
for r in $RUNS; do
    case $r in
        # Open mode: a display name is all the handshake needs.
        chat) run chat "/ws?name=autobahn" "$CASES" "$EXCLUDE" "$CHAT_SHARDS" ;;
        echo) run echo "/echo" "$ECHO_CASES" "$ECHO_EXCLUDE" "$SHARDS" --autobahn-echo --max-frame-bytes 16777216 ;;
        *)
            say "unknown run $r (chat, echo)"
            exit 2
            ;;
    esac
done
