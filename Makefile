# natter — the two commands a newcomer needs are `make run` and `make test`.
# Everything else here is for working on natter.

CARGO ?= cargo
BIN   := target/release/natter
ARGS  ?=

.PHONY: run build test test-rust test-browser lint bench loadtest autobahn fuzz soak chaos clean

## Build in release mode and serve the page on http://localhost:8080 (WebSocket on 8081).
run: build
	$(BIN) serve $(ARGS)

build:
	$(CARGO) build --release -p natter

## Every test: Rust unit and integration tests (redis-server, nginx, caddy and
## certutil are installed on first run for the Redis, proxy and TLS tests), then the browser tests in headless Chromium (installed
## with the Node packages on first run).
test: test-rust test-browser

test-rust:
	scripts/check-dead-code.sh
	scripts/ensure-redis.sh
	scripts/ensure-nginx.sh
	$(CARGO) test --workspace

test-browser: build
	NATTER_BIN=$(BIN) tests/browser/run.sh

## What CI checks besides the tests (.ci/run): rustfmt, clippy with warnings as errors
## and every unsafe block documented, no unused public item, and the layering
## (docs/ARCHITECTURE.md: no import up the layers, no circle but a folder's mod.rs with
## its children, every file of src/ in the module map).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings -D clippy::undocumented_unsafe_blocks
	scripts/check-dead-code.sh
	python3 scripts/check-layers.py

## Longer property-based fuzzing of the parser, the handshake and raw socket input
## (make test runs a few hundred cases; this runs FUZZ_CASES).
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p natter --test fuzz

## criterion fan-out benchmarks (benches/).
bench:
	$(CARGO) bench -p natter

## natter vs the seed's Node.js server, Socket.IO, a tokio server and a bare fan-out
## ceiling, side by side (one room and many rooms; natter's scroll-back under load;
## about 19 minutes).
loadtest:
	loadtest/run.sh

## Autobahn|Testsuite's fuzzing client against a natter on loopback (not part of
## make test): sets the suite up under target/autobahn/ on first run (needs a
## CPython 2.7), runs the chat endpoint (1-7, 10) and the conformance echo (1-13, in
## batches by AB_SHARDS wstest processes, bounded by AB_MAX_SECONDS), prints a summary
## per case group. About 20 minutes on 2 busy cores. docs/AUTOBAHN.md.
autobahn:
	scripts/autobahn.sh

clean:
	$(CARGO) clean

## Soak: hundreds of clients chatting, reconnecting and not reading while the server
## is SIGKILLed twice (loopback only, bounded; make test runs a 9 s version).
SOAK_SECS ?= 120
SOAK_CLIENTS ?= 300
soak:
	NATTER_SOAK_SECS=$(SOAK_SECS) NATTER_SOAK_CLIENTS=$(SOAK_CLIENTS) $(CARGO) test --release -p natter --test soak -- --nocapture

## Chaos: clients on two natter instances (Redis mode) post and record every ack and
## delivery while natter and Redis are killed, stopped, emptied and failed over
## (Sentinel); a checker reads the records and prints a table per fault (loopback
## only, bounded; make test runs a short version). docs/PERFORMANCE.md, "Faults".
CHAOS_SECS ?= 15
CHAOS_CLIENTS ?= 20
chaos:
	scripts/ensure-redis.sh
	NATTER_CHAOS_SECS=$(CHAOS_SECS) NATTER_CHAOS_CLIENTS=$(CHAOS_CLIENTS) $(CARGO) test --release -p natter --test chaos -- --nocapture
