# One virtualenv for everything; created on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
COMPILED := build/compiled/.built

.PHONY: run test lint check bench clean cluster compiled

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the quickstart: a demo app with logs and metrics sidecars injected, run here as processes
run: $(STAMP)
	$(BIN)/sidecarkit run examples/quickstart/pod.yaml --inject --events none
	@echo
	@echo "That was examples/quickstart/pod.yaml with the logs and metrics sidecars injected and run"
	@echo "by 'sidecarkit run'. See the injected pod with:"
	@echo "  .venv/bin/sidecarkit inject -f examples/quickstart/pod.yaml"
	@echo "Lifecycle events: add '--events text'. Guides: docs/runner.md, docs/injection.md."

## test: the whole test suite, then the compiled modules' areas again against build/compiled
test: $(STAMP) $(COMPILED)
	$(BIN)/python -m pytest
	SIDECARKIT_EXPECT_COMPILED=1 PYTHONPATH=build/compiled $(BIN)/python -m pytest \
		tests/injection tests/webhook tests/k8s tests/test_golden.py tests/test_explain.py \
		tests/agents/proxy

## compiled: the package as the image builds it (setup.py: mypyc), in build/compiled
compiled: $(COMPILED)

# Rebuilt whenever a source changes, so build/compiled never runs older code than src/.
$(COMPILED): $(STAMP) setup.py pyproject.toml $(shell find src -name '*.py')
	rm -rf build  # setuptools would reuse what an earlier build left there
	SIDECARKIT_COMPILE=1 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation \
		--target build/compiled .
	touch $@

## cluster: build etcd and the Kubernetes control plane that tests/cluster runs (slow only once)
cluster:
	bash tests/cluster/build.sh

## lint: ruff, formatting, mypy --strict and the import-layer contracts
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## check: everything CI checks
check: lint test

## bench: every benchmark; each prints ratios against a peer run in the same run
bench: $(STAMP)
	$(BIN)/python bench/inject.py
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/runner.py
	$(BIN)/python bench/logs.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
