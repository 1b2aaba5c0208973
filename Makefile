# Coffre — build, test, demo, bench.
# `make demo` and `make test` work on a fresh machine: they install what they
# need from Debian's packages and the Go module proxy.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
BIN := bin
DEMO_DIR ?= demo-out
# Debian packages the tests use as real peers (command:package). A package
# counts as present only when dpkg says so: a command of the same name may be
# a stand-in (some machines ship a `convert` that is not ImageMagick).
PEERS := gpg:gnupg sq:sq rnp:rnp swtpm:swtpm swtpm_setup:swtpm-tools \
	zbarimg:zbar-tools qrencode:qrencode mkfs.vfat:dosfstools mcopy:mtools \
	convert:imagemagick ffmpeg:ffmpeg losetup:mount tpm2_pcrread:tpm2-tools
# Packages whose tests run under the race detector (concurrency-heavy,
# affordable); the rest run without it to keep the suite under 15 minutes.
RACE_PKGS := ./storage/... ./appliance/...

.PHONY: all build test test-race deps demo bench fuzz soak lint race clean

all: build

deps:
	@missing=""; for p in $(PEERS); do c=$${p%%:*}; k=$${p##*:}; \
	  { command -v $$c >/dev/null 2>&1 && dpkg-query -W -f='$${Status}' $$k 2>/dev/null | grep -q 'ok installed'; } || missing="$$missing $$k"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(GO) mod download

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/coffre ./cmd/coffred

test: deps build
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v -e '/storage' -e '/appliance')
	$(GO) test -count=1 -race -timeout 30m $(RACE_PKGS)
	$(GO) test -count=1 -tags crashpoints ./internal/crashpoint/

race: deps
	$(GO) test -count=1 -race -timeout 60m ./...

demo: deps build
	rm -rf $(DEMO_DIR)
	./$(BIN)/coffre demo --dir $(DEMO_DIR)

bench: deps build
	@mkdir -p bench
	@rm -f bench/rows.jsonl
	COFFRE_BENCH_OUT=$(CURDIR)/bench/rows.jsonl $(GO) test -p 1 -tags bench -count=1 -timeout 90m -run '^TestBench' ./... || true
	$(GO) run ./cmd/benchreport -in bench/rows.jsonl -out bench/results.json

# Fuzz every Fuzz target for FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz: deps
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

# Long crash/kill campaigns.
soak: deps
	COFFRE_CRASH_CYCLES=500 $(GO) test -tags soak -count=1 -timeout 120m -run 'Soak|Kill|Crash' ./...

lint: deps
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

clean:
	rm -rf $(BIN) $(DEMO_DIR) bench/rows.jsonl
