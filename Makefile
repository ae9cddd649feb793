# Tagwarden: `make run` starts the stack on loopback, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := redis-server docker-registry skopeo nginx
STAMP := $(VENV)/.installed

.PHONY: run run-ha test image-test unit integration bench conformance lint typecheck system-deps \
	image-deps venv lock clean

# installs the Debian packages named in $$missing (apt-get update first: a fresh machine has
# no package lists); no system service is started by the install (policy-rc.d guard)
APT_INSTALL = echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; \
	    printf '\#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
	    $$SUDO chmod +x /usr/sbin/policy-rc.d; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; [ -z "$$guard" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; exit $$status

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi

# what the image test needs besides system-deps: buildah builds and runs the image (chroot
# isolation, no engine), debootstrap builds the stand-in base image from Debian's archive
image-deps:
	@missing=""; \
	command -v buildah >/dev/null || missing="$$missing buildah"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	test -s /usr/share/keyrings/debian-archive-keyring.gpg || missing="$$missing debian-archive-keyring"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi

# the dependencies from the lock (requirements/test.txt: runtime and test, exact versions),
# then the project itself without resolving anything again
$(STAMP): pyproject.toml requirements/runtime.txt requirements/test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/test.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# re-lock after changing the dependencies in pyproject.toml: versions already locked are kept
# (LOCK_ARGS=--upgrade moves everything to the newest allowed, --upgrade-package NAME one)
LOCK_TOOLS := $(VENV)/tools
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet \
	--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	--annotation-style line $(LOCK_ARGS)

lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
	  $(LOCK_TOOLS)/bin/pip install -q 'pip-tools>=7.4'; }
	$(PIP_COMPILE) --output-file requirements/runtime.txt pyproject.toml
	$(PIP_COMPILE) --extra test --constraint requirements/runtime.txt \
	  --output-file requirements/test.txt pyproject.toml

venv:
	@test -x $(BIN)/python -a -x $(BIN)/tagwarden || rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)

run: system-deps venv
	$(BIN)/tagwarden dev

# Redis primary (6380), replica (6381), three sentinels (26380-26382, master `tagwarden`),
# registry, gateway and two workers; sentinels are `redis-server --sentinel` (no extra package)
run-ha: system-deps venv
	$(BIN)/tagwarden dev --ha

test: system-deps venv
	$(BIN)/pytest -p no:cacheprovider

# the image built from this checkout (stand-in base from Debian's archive) runs a gateway and
# a worker against a test stack; needs root (debootstrap, buildah). Not part of `make test`.
image-test: system-deps image-deps venv
	$(BIN)/pytest -p no:cacheprovider -m container tests/container

unit: venv
	$(BIN)/pytest -p no:cacheprovider tests/unit

integration: system-deps venv
	$(BIN)/pytest -p no:cacheprovider tests/integration

bench: system-deps venv
	$(BIN)/python -m bench

# the OCI distribution-spec conformance suite, through the gateway and against the bare
# registry (a dev tool, not in `make test`): OCI_CONFORMANCE_BIN=/path/to/conformance.test
conformance: system-deps venv
	@test -n "$(OCI_CONFORMANCE_BIN)" || { echo "set OCI_CONFORMANCE_BIN to the conformance test binary" >&2; exit 2; }
	$(BIN)/python -m bench.conformance

lint: venv
	$(BIN)/ruff check service workers testkit tests bench

# mypy over the packages [tool.mypy] in pyproject.toml names (service/domain, service/store,
# service/core, testkit)
typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf .data .data-ha
