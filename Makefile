# retail-sync: the two front-door commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO_ARGS ?=
PYTEST_ARGS ?=
# tests in parallel processes (pytest-xdist; each its own embedded broker): most of an integration
# test is waiting (workers starting, rebalances, timeouts), so more processes than cores pay
TEST_WORKERS ?= 2

.PHONY: help demo test bench lint compose-check compose-secrets clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)  ## run the end-to-end demo on the embedded broker (DEMO_ARGS="--duration 25 --rate 20")
	$(BIN)/retail-sync demo $(DEMO_ARGS)

test: $(STAMP)  ## run the whole test suite (unit + integration on the embedded broker)
	@bash deploy/tools/ensure-test-tools.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)  ## measure the raw consume ceiling and the webhook->ERP pipeline
	$(BIN)/retail-sync bench $(BENCH_ARGS)

$(DEV_STAMP): $(STAMP) pyproject.toml
	@$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(DEV_STAMP)

lint: $(DEV_STAMP)  ## ruff (incl. complexity), mypy --strict (pydantic plugin), import contracts
	@rc=0; \
	echo '== ruff'; $(BIN)/ruff check . || rc=1; \
	echo '== mypy (strict, pydantic plugin: [tool.mypy] in pyproject.toml)'; $(BIN)/mypy || rc=1; \
	echo '== lint-imports (.importlinter)'; $(BIN)/lint-imports || rc=1; \
	exit $$rc

compose-check: $(STAMP)  ## validate docker-compose.yml (compose-spec schema, project rules, promtool) without a Docker engine
	$(BIN)/python -m retail_sync.compose_check docker-compose.yml

compose-secrets: $(STAMP)  ## create deploy/secrets/ (admin tokens file, Prometheus token) if absent
	@# the directory is private to you; the files stay readable for the containers' own users
	@# (Compose bind-mounts secrets with the host file's mode: Prometheus runs as nobody)
	@mkdir -p deploy/secrets && chmod 700 deploy/secrets
	@test -f deploy/secrets/admin-tokens.json || echo '{}' > deploy/secrets/admin-tokens.json
	@test -s deploy/secrets/prometheus-token || $(BIN)/retail-sync admin-token create prometheus \
		--scopes metrics --file deploy/secrets/admin-tokens.json > deploy/secrets/prometheus-token
	@chmod 644 deploy/secrets/admin-tokens.json deploy/secrets/prometheus-token
	@echo "deploy/secrets ready; add people: $(BIN)/retail-sync admin-token create NAME --scopes viewer,operator --file deploy/secrets/admin-tokens.json"

clean:  ## remove the virtual environment and local state
	rm -rf $(VENV) var .pytest_cache
