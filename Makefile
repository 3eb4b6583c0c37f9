# Two commands on a fresh clone: `make run` and `make test`. Everything they need installs here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: run demo test lint typecheck pytest browser promtool bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@ $(VENV)/.run-deps

## run: start refguard on the embedded PostgreSQL under ./.refguard and print an admin token
run: $(VENV)/.run-deps
	@$(BIN)/refguard migrate > /dev/null
	@echo ""
	@echo "  refguard on http://localhost:$(PORT)   (Ctrl-C stops it)"
	@echo "  admin token (shown once): $$($(BIN)/refguard token create --role admin --name 'make run')"
	@echo "  try: curl -H 'Authorization: Bearer <token>' http://localhost:$(PORT)/api/v1/programs"
	@echo "  demo data: run 'make demo' in another terminal, then open http://localhost:$(PORT)/review"
	@echo ""
	@REFGUARD_PORT=$(PORT) REFGUARD_LOG_FORMAT=$${REFGUARD_LOG_FORMAT:-text} $(BIN)/refguard serve

## demo: a demo program with realistic traffic and planted fraud, sent through the server of
## `make run` when one is going, else through one it starts and keeps serving (Ctrl-C stops it);
## prints the review page's URL and a finance token
demo: $(VENV)/.run-deps
	@REFGUARD_PORT=$(PORT) REFGUARD_LOG_FORMAT=$${REFGUARD_LOG_FORMAT:-text} $(BIN)/refguard demo

## test: lint, type-check and run the whole suite against a real (embedded) PostgreSQL
test: lint typecheck pytest

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

pytest: $(VENV)/.test-deps browser promtool
	$(BIN)/pytest --durations=20

## browser: Debian's chromium for the browser tests (Playwright drives it; no browser download)
# A failed install does not stop the suite: the browser tests then report themselves skipped.
browser:
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; } \
	  || echo "warning: could not install chromium; the browser tests will be skipped" >&2

## promtool: Debian's prometheus package, for promtool (tests/test_deploy.py checks docker/prometheus)
# A failed install does not stop the suite: the promtool tests then report themselves skipped.
promtool:
	@command -v promtool > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends prometheus; fi; } \
	  || echo "warning: could not install promtool (package prometheus); the alert rule tests will be skipped" >&2

## bench: the redirect benchmark (installs wrk with apt when missing)
bench: $(VENV)/.test-deps
	@command -v wrk > /dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.redirect

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
