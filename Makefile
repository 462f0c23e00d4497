# ti-operator — `make help` lists the targets. `make test` installs everything it needs, then runs every tier.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST := $(BIN)/pytest -p no:cacheprovider
CRD    := crds/tftrainingjobs.training.ti.io.yaml

.DEFAULT_GOAL := help
.PHONY: help setup system-deps toolchain test-images lint format test test-unit test-integration crds docs demo bench chart-lint images e2e-kind clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv with the package and its dev tools (tensorflow-cpu, moto, ruff, mypy)
$(VENV)/.installed: pyproject.toml
	bash hack/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

system-deps: ## Debian packages (docker.io, containerd, runc, CNI plugins, debootstrap, ...); start dockerd if none answers
	bash hack/system-deps.sh

toolchain: ## build/fetch the pinned toolchain (etcd, kube-*, kubelet, kube-proxy, coredns, kwok, kueue, kubectl, helm) into ~/.cache/ti-operator
	bash hack/toolchain.sh

lint: setup ## ruff (lint + format check) and mypy on src/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-unit: setup toolchain ## pure functions, no server (helm renders the chart)
	TI_TOOLCHAIN_BIN="$$(bash hack/toolchain.sh 2>/dev/null | tail -1)" $(PYTEST) -m unit tests/unit

# The images the real node runs, built here with no registry: a Debian base from Debian's packages,
# TensorFlow from PyPI (a second run finds them up to date in seconds).
test-images: setup system-deps ## build the images the real node runs (Debian base, TensorFlow from PyPI), with no registry
	BASE=debian TF_SOURCE=pypi TF_VERSIONS=2.16.1 TF_VARIANTS=cpu bash images/build.sh

test-integration: setup system-deps toolchain test-images ## real plane + kwok nodes + a real kubelet node + loopback object store
	TI_TOOLCHAIN_BIN="$$(bash hack/toolchain.sh 2>/dev/null | tail -1)" $(PYTEST) -m integration tests/integration

test: lint test-unit test-integration ## everything CI runs

crds: setup docs ## regenerate the CRD (and docs/api.md) from the pydantic models
	$(BIN)/python -m ti.api.crd > $(CRD)
	bash hack/sync-chart-crds.sh

docs: setup ## regenerate docs/api.md from the pydantic models
	$(BIN)/python -m ti.api.docs > docs/api.md

demo: setup ## train the example Keras model through the TI SDK in local mode (no cluster, no Docker)
	$(BIN)/python examples/demo.py

bench: setup toolchain ## run the benchmarks (not part of make test)
	TI_TOOLCHAIN_BIN="$$(bash hack/toolchain.sh 2>/dev/null | tail -1)" nice -n 10 $(BIN)/python bench/control_plane.py $(BENCH_ARGS)
	TI_TOOLCHAIN_BIN="$$(bash hack/toolchain.sh 2>/dev/null | tail -1)" nice -n 10 $(BIN)/python bench/kueue_admission.py

chart-lint: setup toolchain ## helm lint --strict the chart, check its CRD copy, hadolint the Dockerfiles
	"$$(bash hack/toolchain.sh 2>/dev/null | tail -1)/helm" lint --strict charts/ti-operator
	bash hack/sync-chart-crds.sh --check
	$(BIN)/hadolint images/operator/Dockerfile images/tensorflow/Dockerfile images/tensorflow-pypi/Dockerfile images/pause/Dockerfile

images: ## docker build the operator/toolkit image and the TensorFlow 1.14/2.0/2.16 cpu+gpu images a registry has (2.16 cpu from PyPI without one)
	bash images/build.sh

e2e-kind: ## kind cluster, images, chart, in-cluster S3; example manifest + SDK example must complete (needs Docker)
	bash hack/e2e-kind.sh

clean: ## remove the venv and test leftovers (the toolchain cache stays)
	rm -rf $(VENV) test-logs .ti-work .mypy_cache .ruff_cache
