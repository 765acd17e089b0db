# Every entry point a user, pre-commit or CI needs. `make run` and `make test` work from a
# fresh clone: they create the virtualenv, install, and generate the gRPC code first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/arbiter/v1/*.proto)
GENERATED := arbiter/v1/decision_pb2.py

.PHONY: install run test lint bench protos generate clean

install: $(VENV)/.installed $(GENERATED)

# The generated package must exist before the editable install so that the install maps
# it; so the code generator is installed first (same pins as the dev extra).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "grpcio-tools>=1.85,<1.86" "mypy-protobuf>=3.6"
	$(MAKE) --no-print-directory generate
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Generated code is build output (not committed): messages, aio-compatible stubs and
# .pyi files for mypy.
$(GENERATED): $(PROTOS) | $(VENV)/.installed
	$(MAKE) --no-print-directory generate

generate:
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch arbiter/__init__.py arbiter/v1/__init__.py

protos: $(VENV)/.installed
	$(MAKE) --no-print-directory generate

run: install
	$(BIN)/arbiter serve --demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bench_decide.py

clean:
	rm -rf $(VENV) arbiter var build *.egg-info
