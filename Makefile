# Tidings — the two commands that matter: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
# `make run PORT=8080 HOST=0.0.0.0`: where `make run` listens (0.0.0.0: every interface)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install generate lock lint typecheck bench bench-redis bench-security browser-deps js-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/pip install -q uv==0.13.8

# Install the locked dependencies of every extra (requirements.lock, hashes checked) and the package itself.
$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python --require-hashes -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m tidings.codegen
	touch $(STAMP)

install: $(STAMP)

# The JavaScript close-code module (web/client/close-codes.js, .d.ts) from src/tidings/close_codes.py; a test
# fails when the committed files drift from the table.
generate: $(STAMP)
	$(BIN)/python -m tidings.codegen

# Re-lock every extra (all = redis, users, platform) and the dev tools, with hashes.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra all --extra dev --python-version 3.11 -o requirements.lock --generate-hashes

run: $(STAMP)
	$(BIN)/tidings serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench || true

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's Chromium for the browser tests (Playwright drives it through executable_path).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Node packages of the benchmark's load client (the JS client itself has no dependencies).
js-deps:
	@if [ -f bench/package-lock.json ]; then cd bench && npm ci --silent --no-audit --no-fund; fi

test: $(STAMP) browser-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	cd src/tidings/web/client && node --test test/
	$(BIN)/pytest

bench: $(STAMP) js-deps
	$(BIN)/python -m bench.fanout

bench-redis: $(STAMP)
	$(BIN)/python -m bench.redis_fanout
	$(BIN)/python -m bench.redis_shards

# Issue 9's targets: one user flooding new rooms (memory and Redis), a login flood's effect on another client's ping.
bench-security: $(STAMP)
	$(BIN)/python -m bench.security

clean:
	rm -rf $(VENV) var test-results node_modules
