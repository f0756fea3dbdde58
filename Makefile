# SMILE build and test entry points. `make run` and `make test` do all set-up
# (Debian packages, the default model download) themselves.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/smile
# Tests and the smoke benchmarks keep their model in the repository's cache.
TEST_DATA ?= $(CURDIR)/.cache/smile-test
export SMILE_TEST_DATA_DIR := $(TEST_DATA)
# 3 s per target keeps CI (2 cores, 24 targets) well under its 15 minutes;
# scripts/fuzz-short.sh with FUZZTIME=5m is the longer run.
FUZZTIME ?= 3s

.PHONY: multinode all deps build run test check unit fuzz bench-smoke bench bench-full reference proto proto-check clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(GO) build -o $(BIN) ./cmd/smile
	@$(BIN) version | grep -q openblas || { echo "build: the OpenBLAS backend is missing (is cgo on? gcc and libopenblas-dev installed?)"; exit 1; }

# The main job on the embedded default: the single-node server (embedded
# Badger in ~/.smile/db, use-lite pulled into ~/.smile on first use, HTTP
# API on 127.0.0.1:7077). README.md has a CLI and curl session against it.
run: build
	$(BIN) serve

# Everything CI runs: formatting, vet, the race-enabled test suite (parity
# tests on the real weights included), a short fuzz of every decoder and
# tokenizer, and one iteration of every benchmark.
# The race suite runs last so its closing count is the last line printed.
test: build check proto-check
	@test -f $(TEST_DATA)/backbones/use-lite || $(BIN) --data-dir $(TEST_DATA) pull use-lite
	FUZZTIME=$(FUZZTIME) scripts/fuzz-short.sh
	$(MAKE) --no-print-directory bench-smoke
	# Allocation checks are skipped under -race (it allocates): run them without.
	$(GO) test -count=1 -run 'Alloc' ./...
	$(MAKE) --no-print-directory multinode
	scripts/test-race.sh

# Tests that run several cluster nodes in one process: they skip under
# -race (protoactor-go's Remote.Start races by construction there, see
# internal/testenv/multinode.go), so they run here without it.
multinode:
	$(GO) test -count=1 -run 'TestPlacement|TestGossipKey|TestClusterClient|Example' ./cluster/ ./api/actorclient/

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...
	$(GO) vet -tags purego ./...

# Benchmarks, once each, so they never rot; and the CLI benchmarks, quick.
bench-smoke: build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...
	$(BIN) --data-dir $(TEST_DATA) bench gemm --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench forward --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench serve --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench train --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench accuracy --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench plot --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench density --quick --json
	$(BIN) --data-dir $(TEST_DATA) bench cluster --quick --json

# Full benchmark runs for docs/BENCHMARKS.md.
bench: build
	$(BIN) bench gemm --json
	$(BIN) bench forward --json
	$(BIN) bench serve --json
	$(BIN) bench train --json
	$(BIN) bench accuracy --json
	$(BIN) bench plot --json
	$(BIN) bench density --json
	$(BIN) bench cluster --json

# Regenerate the JS reference outputs and measure the JS library (needs npm).
reference:
	cd scripts/reference && npm ci --no-audit --no-fund && node gen.js && node bench.js

# Regenerate api/smilepb's Go code from its .proto files (pinned protoc and
# protoc-gen-go; installs Debian's protobuf-compiler if missing). The result
# is committed; proto-check fails when it is stale.
proto:
	scripts/proto.sh

proto-check:
	scripts/proto-check.sh

clean:
	rm -rf bin .cache
