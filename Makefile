# XP Streams: `make demo` runs the pipeline on the embedded local stack; `make test` runs the
# tests. Both set themselves up: virtual environment, Python packages, and Debian packages
# (PostgreSQL 15, kcat, Prometheus, Java, Maven, docker-compose) through apt-get when missing
# and we are root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench system-deps venv k8s-tools k8s-generate lint clean

# BROKER=kafka (Apache Kafka 4.4, one node; the default) or BROKER=kafka-3 (three nodes).
BROKER ?= $(XP_LOCAL_BROKER)

demo: venv system-deps
	XP_LOCAL_BROKER=$(BROKER) $(BIN)/streams lab demo

test: venv system-deps k8s-tools
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest -m "not slow and not integration"

# Every stage against its limits on a throwaway local stack (README: Performance).
bench: venv system-deps
	$(BIN)/streams bench --local

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# PostgreSQL's initdb/pg_ctl, kcat, promtool, Java + Maven (Apache Kafka's jars come from
# Maven Central, streams/dev/kafka_cluster.py) and docker-compose (`docker-compose config`
# checks deploy/compose.yaml) come from Debian; install them when absent.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing="$$missing postgresql"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

# deploy/k8s is checked offline (tests/contract/test_k8s.py): the operators' CRD schemas
# (prometheus-operator and KEDA from the Go module proxy, Strimzi's generated from its Maven
# Central jars) and a kustomize with components: kubectl's when it bundles kustomize v5, else
# one built from the Go module proxy into the venv.
KUSTOMIZE_VERSION := v5.7.1
k8s-tools: venv
	@tests/contract/k8s_schemas/fetch.sh .cache/k8s-schemas
	@if [ ! -x $(BIN)/kustomize ] && ! kubectl version --client -o json 2>/dev/null \
	    | grep -q '"kustomizeVersion": "v5'; then \
	  echo "building kustomize $(KUSTOMIZE_VERSION) (kubectl has no kustomize v5)"; \
	  GOBIN=$(abspath $(BIN)) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); \
	fi

# Regenerate the manifests deploy/k8s derives from deploy/prometheus/alerts.yml and the
# Grafana dashboard (a contract test fails while they are stale).
k8s-generate: venv
	$(BIN)/python deploy/k8s/generate.py

lint: venv
	$(BIN)/ruff check streams tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
