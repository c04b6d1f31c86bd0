# fishtune — one entry point for people and CI.
#   make setup   install everything (system packages, locked Python env) and run the demo pipeline
#   make test    run the test suite (installs first if needed)
#   make test-fast   the quick tier of the suite for the edit loop (tests not marked slow or e2e)
#   make image   build the container image (docker buildx, or buildah where there is no Docker daemon)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON      ?= python3
UV_VERSION  := 0.13.9
UV          := $(PYTHON) -m uv
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.fishtune-synced
LINT_VENV   := .venv-lint
LINT_STAMP  := $(LINT_VENV)/.fishtune-synced
# A browser for the report test (tests/test_report_browser.py): any Chromium-family one already installed counts;
# otherwise Debian's chromium package. On Ubuntu `chromium` is a snap wrapper: never installed from here (CI runners
# ship google-chrome), and the test is skipped where there is none.
BROWSER_PKG := $(shell for b in chromium chromium-browser google-chrome google-chrome-stable; do command -v $$b >/dev/null 2>&1 && exit 0; done; grep -qi '^ID=debian' /etc/os-release 2>/dev/null && echo chromium)
SYSTEM_PKGS := ffmpeg espeak-ng protobuf-compiler libvoikko1 voikko-fi $(BROWSER_PKG)
DEMO        := runs/demo
DEMO_INPUTS := build/demo
PYTEST_ARGS ?=
IMAGE       ?= localhost/fishtune:dev
# auto: `make test` also builds the image and smoke-tests it inside when buildah is installed (and no
# PYTEST_ARGS narrow the run); 0: never; 1: always (with docker or buildah)
IMAGE_TEST  ?= auto
# auto: `make test` ends with `make rehearse` (full-size s1-mini shapes through every stage, ~15 min on 2 cores)
# unless PYTEST_ARGS narrow the run; 0: never; 1: always
REHEARSE    ?= auto
REHEARSAL   := build/rehearsal

.PHONY: test-fast rehearse bench bench-gpu bench-report device-wheels setup install system-deps uv demo test lint proto lock clean help image image-smoke image-test base-image base-digest driver

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: install demo ## install everything, then run the demo pipeline on the embedded default

install: system-deps $(STAMP) ## system packages + the locked Python environment in .venv

system-deps: ## ffmpeg (torchcodec), espeak-ng (test speech), protoc (proto check), a browser (report test; Debian only), libvoikko1 + voikko-fi (Finnish morphology) via apt
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)
	if [ -n "$$missing" ]; then
	  echo "installing system packages: $$missing"
	  if ! command -v apt-get >/dev/null; then echo "error: install $$missing with your package manager" >&2; exit 1; fi
	  SUDO=$$([ "$$(id -u)" = 0 ] && echo "" || echo sudo)
	  $$SUDO apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null
	fi

uv: ## the pinned uv (the lock's resolver and installer)
	@if [ "$$($(UV) --version 2>/dev/null | cut -d' ' -f2)" != "$(UV_VERSION)" ]; then
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	fi

$(STAMP): uv.lock pyproject.toml | uv
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

demo: install ## tiny model + espeak-ng Finnish clips (in build/demo), then STAGE=all on them into runs/demo (CPU, about a minute)
	$(PY) -m fishtune.demo --run --out $(DEMO) --inputs $(DEMO_INPUTS)

test: install ## the test suite (CPU); where buildah is installed, first the image: build + in-image smoke test
	@if [ "$(IMAGE_TEST)" = 1 ] || { [ "$(IMAGE_TEST)" = auto ] && [ -z "$(PYTEST_ARGS)" ] && command -v buildah >/dev/null; }; then
	  [ "$(IMAGE_TEST)" = auto ] && export ENGINE=buildah
	  $(MAKE) --no-print-directory image-smoke
	  export FISHTUNE_IMAGE=$(IMAGE)   # tests/test_image_lock.py: the image's environment == uv.lock
	else
	  echo "image build + smoke test skipped (IMAGE_TEST=$(IMAGE_TEST); needs buildah: apt-get install buildah debootstrap)"
	fi
	$(PY) -m pytest $(PYTEST_ARGS)
	if [ "$(REHEARSE)" = 1 ] || { [ "$(REHEARSE)" = auto ] && [ -z "$(PYTEST_ARGS)" ]; }; then
	  $(MAKE) --no-print-directory rehearse
	fi

test-fast: install ## the quick tier for the edit loop: every test not marked slow or e2e (under 2 min on 2 cores)
	$(PY) -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

rehearse: install ## every stage on a random full-size s1-mini (bf16, real files and sizes) on the CPU: $(REHEARSAL)/rehearsal.json
	$(PY) -m fishtune.rehearsal --dir $(REHEARSAL)

$(LINT_STAMP): uv.lock pyproject.toml | uv
	UV_PROJECT_ENVIRONMENT=$(LINT_VENV) $(UV) sync --frozen --only-group lint --no-install-project --python $(PYTHON)
	touch $@

lint: $(LINT_STAMP) ## only the linters (own venv, no CUDA stack): ruff, hadolint, shellcheck, actionlint, check-jsonschema
	export PATH=$(CURDIR)/$(LINT_VENV)/bin:$$PATH   # actionlint runs shellcheck on the workflows' run: steps
	ruff check src tests bench entrypoint.py docker
	ruff format --check src tests bench entrypoint.py docker
	hadolint Dockerfile
	shellcheck docker/*.sh bench/*.sh .ci/run
	actionlint -config-file .github/actionlint.yaml
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	check-jsonschema --builtin-schema custom.github-workflows-require-timeout .github/workflows/*.yml
	check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml

base-digest: ## pin the Dockerfile's base image by its current digest (needs docker buildx, skopeo or crane and a registry)
	docker/refresh-base-digest.sh

driver: ## the NVIDIA driver the image needs, computed from the torch build in uv.lock
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) docker/driver_requirement.py

base-image: ## the local Debian bookworm + Python base for buildah builds (no registry here)
	docker/make-base.sh

image: ## build the image from the Dockerfile (BASE_IMAGE=..., WEIGHTS=openaudio-s1-mini WEIGHTS_REVISION=... HF_TOKEN_FILE=...)
	IMAGE=$(IMAGE) docker/build.sh

image-smoke: image ## build, then the smoke test inside the image: doctor, then STAGE=all on the tiny model
	$(PYTHON) docker/smoke_test.py $(IMAGE)

image-test: image-smoke install ## image-smoke, then check the image's Python environment against uv.lock
	FISHTUNE_IMAGE=$(IMAGE) $(PY) -m pytest -p no:cacheprovider -q tests/test_image_lock.py

bench: install ## benchmarks on tiny shapes (CPU, about a minute): JSON in bench-results/
	$(PY) -m bench.train --shapes tiny --settings ladder,mem24 --batch-size 2 --max-length 1024 --steps 4 --warmup 1 --clips 60 --out bench-results/train-tiny.json
	$(PY) -m bench.extract --shapes tiny --clips 6 --out bench-results/extract-tiny.json
	$(PY) -m bench.plan --clips 2000,8000,32000 --before-max 8000 --out bench-results/plan.json
	$(PY) -m bench.synth --shapes tiny --frames 30 --out bench-results/synth-tiny.json

bench-gpu: install ## the GPU check in one go (bench/on_device.sh): s1-mini shapes (random weights), ~8 min on an H100/H200
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bench/on_device.sh

device-wheels: ## wheels in .whl/ for running bench/ on a GPU machine without internet (bench/on_device.sh)
	bench/device-wheels.sh

bench-report: ## markdown tables of every JSON in bench-results/
	$(PY) -m bench.report bench-results/*.json

proto: ## regenerate src/fishtune/proto/text_data_pb2.py from text_data.proto
	cd src/fishtune/proto && protoc --python_out=. text_data.proto

lock: uv ## re-resolve uv.lock after editing pyproject.toml
	$(UV) lock

clean:
	rm -rf $(VENV) $(LINT_VENV) runs .pytest_cache .ruff_cache
