# The commands the README shows. `make demo` and `make test` do all the set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= local
PYTEST_ARGS ?=
NOTEBOOK_PORT ?= 8888
NOTEBOOK_ARGS ?=
BENCH ?=
BENCH_ARGS ?=
STREAM_WINDOW_S ?= 300
MINUTES ?= 30
# BROKERS=3: every target runs against a three-node Kafka cluster (local_stack.brokers).
BROKERS ?=
ifneq ($(BROKERS),)
export CHURN__LOCAL_STACK__BROKERS := $(BROKERS)
endif
# WORKERS=N: `make cluster-up` starts N Spark workers (local_stack.spark_workers, default 2).
WORKERS ?=
ifneq ($(WORKERS),)
export CHURN__LOCAL_STACK__SPARK_WORKERS := $(WORKERS)
endif
JOB ?=
ARGS ?=

# A secured stack's credentials (CONFIG=secure, docs/security.md): `make up` writes them, and
# the targets that run jobs load them into the environment, where the jobs read them.
SECRETS := .local/stack/secrets.env
WITH_SECRETS := if [ -f $(SECRETS) ]; then set -a; . ./$(SECRETS); set +a; fi;

.PHONY: help setup jars up down status cluster-up cluster-down submit test test-fast lint k8s demo screenshots notebook bench soak clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

setup: $(VENV)/.installed  ## venv + project (editable, dev extras) + Kafka/Spark/Delta jars from Maven + the validator's fast path (javac) + the Spark driver's class archive
	@$(PY) -m infra.jars
	@$(PY) -m infra.class_archive

up: setup  ## start Kafka (KRaft; BROKERS=3: three replicated nodes) and MLflow on 127.0.0.1, wait until all answer (CONFIG=secure: SASL_SSL, ACLs, MLflow basic auth)
	@$(VENV)/bin/churn-stack --config $(CONFIG) up

down:  ## stop the processes `make up` started
	@if [ -x $(VENV)/bin/churn-stack ]; then $(VENV)/bin/churn-stack --config $(CONFIG) down; fi

status:  ## what is running, where it listens and logs
	@$(VENV)/bin/churn-stack --config $(CONFIG) status

cluster-up: setup  ## start a Spark standalone master and two workers (WORKERS=N) on 127.0.0.1 for `make submit` (master spark://127.0.0.1:7077, web UI :8080)
	@$(VENV)/bin/churn-stack --config $(CONFIG) cluster-up

cluster-down:  ## stop the Spark cluster `make cluster-up` started (`make down` stops it too)
	@if [ -x $(VENV)/bin/churn-stack ]; then $(VENV)/bin/churn-stack --config $(CONFIG) cluster-down; fi

submit: setup  ## spark-submit JOB (stream_features, stream_scores, train, score_batch, backfill_features) with ARGS to the cluster (SPARK_MASTER, default make cluster-up's): the project as a wheel, the jars with --jars
	@test -n "$(JOB)" || { echo "make submit: JOB= names the job (stream_features, stream_scores, train, score_batch, backfill_features)" >&2; exit 2; }
	@$(WITH_SECRETS) $(PY) -m infra.submit --config $(CONFIG) $(JOB) $(ARGS)

test: setup  ## run the whole test suite (starts its own broker and MLflow server)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## unit tests only (no broker, no MLflow server, no slow tests)
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

k8s: setup  ## render deploy/k8s (base and overlays) with kustomize and validate every resource against Kubernetes' and the operators' schemas
	$(PY) -m infra.k8s

lint: setup  ## ruff (lint + format check, notebooks too) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: up  ## run the pipeline end to end on the local stack (CONFIG=secure: secured, docs/security.md)
	@$(WITH_SECRETS) $(PY) -m jobs.demo --config $(CONFIG)

screenshots: setup  ## headless-Chromium screenshots of the MLflow pages the last `make demo` linked, into .local/screenshots (SHOTS_DIR); installs Debian's chromium when missing (root)
	@$(PY) -m infra.browser shots --out $(or $(SHOTS_DIR),.local/screenshots)

notebook: setup  ## JupyterLab in the venv on 127.0.0.1:8888 (NOTEBOOK_PORT), opened at notebooks/; run `make demo` first
	@$(WITH_SECRETS) CHURN_CONFIG=$(CONFIG) $(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --port=$(NOTEBOOK_PORT) \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root) $(NOTEBOOK_ARGS)

bench: up  ## benchmarks (BENCH=parse|ingest|stream: one; STREAM_WINDOW_S, BENCH_ARGS): ratios to references measured in the same run; BENCH=cluster (not in the default set): the feature stream on one Spark worker against two
	@for b in $(or $(BENCH),parse ingest stream); do \
	  case $$b in parse|ingest|stream|cluster) ;; *) echo "make bench: BENCH=$$b: not one of parse, ingest, stream, cluster" >&2; exit 2;; esac; \
	  echo "bench: $$b"; start=$$(date +%s); \
	  extra=$$([ $$b = stream ] && echo --window-s $(STREAM_WINDOW_S)); \
	  $(PY) -m benchmarks.bench_$$b --out .local/bench/results.jsonl $$extra $(BENCH_ARGS) || exit $$?; \
	  echo "bench: $$b took $$(( $$(date +%s) - start ))s"; \
	done

soak: up  ## both streaming jobs for MINUTES (30) at half the sustained rate; lag and memory every 10 s, a plot and a verdict (docs/reliability.md)
	$(PY) -m benchmarks.soak --minutes $(MINUTES) --out .local/bench/results.jsonl $(BENCH_ARGS)

clean: down  ## remove all local state (tables, checkpoints, broker data, MLflow runs, credentials, scheduler state); keeps venv, jars, tools and .local/bench
	rm -rf .local/stack .local/warehouse .local/checkpoints .local/event-ids .local/demo .local/training
