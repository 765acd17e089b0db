# Every entry point a user, pre-commit or CI needs. `make run` and `make test` work from a
# fresh clone: they create the virtualenv, install, and generate the gRPC code first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second environment with the `dask` extra, for the Dask training test only: the main
# one stays without scikit-learn, which slows every `import lightgbm` (server start-up).
DASK_VENV := .venv-dask
PROTOS := $(wildcard protos/arbiter/v1/*.proto)
GENERATED := arbiter/v1/decision_pb2.py

.PHONY: install dev browser run test lint format bench bench-check bench-scale bench-feast bench-triggers load chaos simulate before protos generate clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `install`: what serving needs (`make run`); `dev`: the tools, the tests' own needs and
# the simulation's peer learner too (every target that tests, lints, measures or simulates).
install: $(VENV)/.installed $(GENERATED)

dev: install $(VENV)/.dev

# The generated package must exist before the editable install so that the install maps
# it; so the code generator is installed first (same pins as the dev extra).
$(VENV)/.installed: pyproject.toml
	@echo "installing what serving needs into $(VENV) (the first time: a minute or two)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on "grpcio-tools>=1.85,<1.86" "mypy-protobuf>=3.6"
	$(MAKE) --no-print-directory generate
	$(BIN)/python -m pip install --progress-bar on -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	@echo "installing the development, test and simulation tools into $(VENV)"
	$(BIN)/python -m pip install --quiet -e '.[dev,simulation]'
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

# The agent-desktop test drives Debian's chromium (Playwright's own browser download is
# not used); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

$(DASK_VENV)/.installed: pyproject.toml | $(GENERATED)
	test -x $(DASK_VENV)/bin/python || $(PYTHON) -m venv $(DASK_VENV)
	$(DASK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DASK_VENV)/bin/python -m pip install --quiet -e '.[dev,dask]'
	touch $@

# The suite on TEST_WORKERS processes (pytest-xdist; 1 runs it in this one), each with a
# Redis of its own; a module with an expensive fixture keeps its tests on one worker.
TEST_WORKERS ?= 2
test: dev browser $(DASK_VENV)/.installed
	$(BIN)/python -m pytest $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
	$(DASK_VENV)/bin/python -m pytest tests/dask

lint: dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# What lint would say, fixed where a tool can: imports sorted, code formatted.
format: dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The latency budget's targets, each printed beside its measure (about 8 minutes: the
# scaling table compiles a 1000-tree model).
bench: dev
	$(BIN)/python -m benchmarks.bench_decide
	$(BIN)/python -m benchmarks.bench_load
	$(BIN)/python -m benchmarks.bench_bulk
	$(BIN)/python -m benchmarks.bench_scaling

# Decide against Health/Check in one run, as ratios; fails when either is more than 25%
# below the figures in benchmarks/recorded.json (about 1.5 minutes). Run before calling
# any change to the decision path done; `--record` (by hand) writes new figures.
bench-check: dev
	$(BIN)/python -m benchmarks.bench_check

# Load with locust (benchmarks/locustfile.py) against a running service (`make run` in
# another terminal, or LOAD_TARGET=host:port), headless for LOAD_SECONDS; writes locust's
# CSV files and HTML report into var/load/ (failed calls are in the report; the target
# succeeds). Locust lives in its own environment: gevent stays out of the service's.
LOAD_VENV := .venv-load
LOAD_TARGET ?= 127.0.0.1:50051
LOAD_USERS ?= 40
LOAD_SECONDS ?= 30
load: $(LOAD_VENV)/.installed $(GENERATED)
	mkdir -p var/load
	PYTHONPATH=. $(LOAD_VENV)/bin/locust -f benchmarks/locustfile.py --headless \
		--host $(LOAD_TARGET) -u $(LOAD_USERS) -r $(LOAD_USERS) -t $(LOAD_SECONDS)s \
		--csv var/load/arbiter --html var/load/report.html --only-summary \
		--exit-code-on-error 0

$(LOAD_VENV)/.installed:
	test -x $(LOAD_VENV)/bin/python || $(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOAD_VENV)/bin/python -m pip install --quiet "locust>=2.30" "grpcio>=1.85,<1.86" "protobuf>=6.31"
	touch $@

# Arbiter's whole Decide against Feast's gRPC feature server fetching the same features,
# one run (benchmarks/bench_feast.py). Feast lives in its own environment, never in the
# service's.
FEAST_VENV := .venv-feast
# Past one machine (docs/scale.md): Decide on a Redis Cluster of our own against one
# server, then 1M logged decisions exported to Parquet and trained on, with peak memory
# (about 10 minutes, ~3.3 GB of memory at the peak).
bench-scale: dev
	$(BIN)/python -m benchmarks.bench_cluster
	$(BIN)/python -m benchmarks.bench_export

# Event triggers (docs/outbound.md): from RecordEvent to the message on the stream at
# 200 events/s while Decide serves 200/s, then 10,000 triggers fired while the server is
# killed (SIGKILL) 5 times: each on the stream once (about 2 minutes).
bench-triggers: dev
	$(BIN)/python -m benchmarks.bench_triggers

bench-feast: dev $(FEAST_VENV)/.installed
	$(BIN)/python -m benchmarks.bench_feast

$(FEAST_VENV)/.installed:
	test -x $(FEAST_VENV)/bin/python || $(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FEAST_VENV)/bin/python -m pip install --quiet "feast[redis]==0.67.*" "grpcio>=1.85,<1.86" \
		"grpcio-health-checking>=1.85,<1.86"
	touch $@

# Faults and hostile callers, full size (a few minutes); `make test` runs them small.
# CHAOS_ARGS="--fuzz 100000 --soak-seconds 600" for a longer soak. CHAOS_BEFORE=<commit>:
# the outages and the soak served by that commit too, in the same run (`make before`).
CHAOS_ARGS ?=
CHAOS_BEFORE ?=
chaos: dev
	$(if $(CHAOS_BEFORE),$(MAKE) --no-print-directory before BEFORE=$(CHAOS_BEFORE))
	$(BIN)/python -m benchmarks.chaos $(if $(CHAOS_BEFORE),--before var/before/$(CHAOS_BEFORE)) $(CHAOS_ARGS)

# The learning loop head to head (docs/simulation.md): Arbiter against Vowpal Wabbit,
# value-only and random, 3 seeds, 6 simulated days of 5,000 customers with 8 scheduled
# retrains each and the online learner every 100 decisions; a new, better offer joins on
# day 4, fibre_broadband's appeal halves on day 5 (about 50 minutes). SIM_BEFORE=<commit>:
# that commit's learner runs the same seeds beside it and joins the table as "before",
# with SIM_BEFORE_ARGS added to its command (the default: this code without the online
# layer, exploring by softmax, with the same changes mid-run).
SIM_ARGS ?= --compare arbiter,vw,value,random --seeds 3 --days 6 --customers 5000 \
	--world 50000 --retrains-per-day 8 --new-offer-day 4 --halve fibre_broadband:5
SIM_BEFORE ?=
SIM_BEFORE_ARGS ?= --learn-every 0 --policy softmax --retrains-per-day 8 --new-offer-day 4 \
	--halve fibre_broadband:5
simulate: dev
	$(if $(SIM_BEFORE),$(MAKE) --no-print-directory before BEFORE=$(SIM_BEFORE))
	$(BIN)/arbiter simulate $(SIM_ARGS) $(if $(SIM_BEFORE),--before var/before/$(SIM_BEFORE) \
		--before-args "$(SIM_BEFORE_ARGS)")

# A checkout of BEFORE=<commit> in var/before/, its gRPC code generated (this
# environment's packages): what `make chaos` and `make simulate` compare with.
before: dev
	test -d var/before/$(BEFORE) || git worktree add --detach var/before/$(BEFORE) $(BEFORE)
	cd var/before/$(BEFORE) && $(abspath $(BIN))/python -m grpc_tools.protoc -Iprotos \
		--python_out=. --grpc_python_out=. protos/arbiter/v1/*.proto && \
		touch arbiter/__init__.py arbiter/v1/__init__.py

clean:
	rm -rf $(VENV) $(DASK_VENV) $(LOAD_VENV) $(FEAST_VENV) arbiter var build *.egg-info
	git worktree prune
