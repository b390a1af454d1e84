# queuefleet: one entry point for setup, the demo and every test.
# Each target that needs tools depends on `setup`, so `make demo` and
# `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

MOLECULE_SCENARIOS ?= default

.PHONY: help setup engine demo demo-down lint test-sanity test-guard test-roles test-preflight test-check-fresh test-walkthrough test-worker test-rules test-molecule test-multihost test

help:
	@echo "make demo        deploy everything onto a local disposable container and print a report"
	@echo "make demo-down   remove the demo container"
	@echo "make test        setup + lint + ansible-test sanity + worker tests + alert rule tests + deploy guard + role checks + molecule scenario(s)"
	@echo "make setup       install system packages, the controller venv and collections (idempotent)"
	@echo "make lint        yamllint + ansible-lint (production profile)"
	@echo "make test-rules  promtool check + unit tests of the Prometheus alert rules (roles/monitoring/files/)"
	@echo "make test-sanity ansible-test sanity on the collection as built (offline, no containers)"
	@echo "make test-worker / test-sanity / test-rules / test-guard / test-roles / test-preflight / test-check-fresh / test-walkthrough / test-molecule / test-multihost   single test stages"

setup:
	bash scripts/setup.sh

engine: setup
	bash scripts/engine.sh

demo: setup engine
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

lint: setup
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production

# ansible-test sanity on the collection as `ansible-galaxy collection build` makes it (tests/sanity.sh):
# the tests that run offline on the controller's Python, without containers; ignores with their
# reasons in tests/sanity/ignore-<ansible-core version>.txt.
test-sanity: setup
	bash tests/sanity.sh

test-worker: setup
	@if [ -f worker/pyproject.toml ] && [ -d worker/tests ]; then \
	  .venv/bin/python -m pytest worker/tests -q; \
	else \
	  echo "test-worker: skipped, worker/ (pyproject.toml + tests/) does not exist yet"; \
	fi

# Prometheus alert rules (roles/monitoring/files/queuefleet.rules.yml): syntax, then the
# promtool unit tests, every alert firing and not firing.
test-rules: setup
	.venv/bin/promtool check rules roles/monitoring/files/queuefleet.rules.yml
	.venv/bin/promtool test rules tests/rules/queuefleet.rules.test.yml

# deploy.yml's one-environment guard.
test-guard: setup
	bash tests/deploy_guard.sh

# Role conventions (defaults vs argument specs, headers), the docs' links (in the repository and
# in the built collection), and each role stopping on bad inventory before anything changes.
test-roles: setup
	.venv/bin/python -m pytest tests/test_role_conventions.py tests/test_build_wheelhouse.py tests/test_supervisor_apply.py tests/test_managed_files.py tests/test_autoscale_plugins.py tests/test_live_config.py tests/test_converged.py tests/test_pool_model.py tests/test_fleet_plugins.py \
	  tests/test_preflight_capacity.py tests/test_postdeploy_check.py tests/test_host_report.py tests/test_packages_action.py \
	  tests/test_config_backup_paths.py tests/test_doc_links.py -q
	bash tests/role_validation.sh
	bash tests/prune_release.sh

# Bad inventories: each stops the preflight with its own message, before anything
# changes (tests/preflight_cases.sh; add --demo to run them through deploy.yml
# against the demo container and compare checksums of the managed files).
test-preflight: setup
	bash tests/preflight_cases.sh

# deploy.yml --check --diff on a fresh Debian 13 and Debian 12 host: completes, lists the
# changes, changes nothing (a converged host's check run is part of test-molecule).
test-check-fresh: setup engine
	bash tests/check_fresh.sh

test-molecule: setup engine
	@for s in $(MOLECULE_SCENARIOS); do bash scripts/molecule-test.sh "$$s"; done

# Beyond one host (issue 6): Redis, MariaDB and two worker hosts on a private
# network; security checks, rolling deploys, faults under load (bench/FAULTS.md).
test-multihost: setup engine
	bash scripts/molecule-test.sh multihost

# docs/first-deploy.md followed literally (issue 27): a controller set up by that page alone (its
# own user, a fresh venv), three stand-in servers reached over SSH, the collection built and
# installed into an ops project, the deploy with its checks, a re-deploy that changes nothing, the
# firewall; then the artifact's contents and a role alone as its README shows (tests/walkthrough.sh).
test-walkthrough: setup engine
	bash tests/walkthrough.sh

# Prerequisites run in order (no -j); setup runs once; any failure stops make.
test: setup lint test-sanity test-worker test-rules test-guard test-roles test-preflight test-check-fresh test-walkthrough test-molecule test-multihost
	@echo "make test: lint, test-sanity, test-worker, test-rules, test-guard, test-roles, test-preflight, test-check-fresh, test-walkthrough, test-molecule and test-multihost all passed"
	@echo "stages: 11 passed, 0 failed"
