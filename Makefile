# Set-up is part of every target: a fresh clone needs only Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench proto constraints clean

# The plugin in tests/plugins is a third-party distribution: tests/test_plugins.py needs it installed.
PLUGIN := tests/plugins/dlforge_regression

$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,ray,tracking,tune]'
	$(BIN)/pip install -q -e $(PLUGIN)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dlforge run --overwrite

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

# Regenerate the gRPC message code from the .proto (committed; tests check it matches this output).
PROTO := src/dlforge/serve/grpc/proto/grpc_predict_v2.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src $(PROTO)

# Pin the images' dependencies (deploy/constraints.txt) to the versions installed here, which the tests ran with.
constraints: $(STAMP)
	$(BIN)/python deploy/pin_constraints.py

clean:
	rm -rf $(VENV) runs .pytest_cache
