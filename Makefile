# Two entry points: `make demo` and `make test`. Both create .venv (Python 3.11) and install on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean browser postgres

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

# The UI test drives Debian's headless chromium; install it where missing (needs root and Debian's apt).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "WARNING: chromium is missing and this is not root: install it (apt-get install chromium) or test_ui_browser fails"; fi; \
	fi

# The deployment tests (Dagster, MLflow and Optuna on PostgreSQL) start a real server from Debian's postgresql
# binaries; install them where missing (needs root and Debian's apt), else those tests skip and say why.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (apt-get) for the deployment tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "WARNING: PostgreSQL is missing and this is not root: install it (apt-get install postgresql) or the deployment tests skip"; fi; \
	fi

# Lint and format (pyproject.toml [tool.ruff]), layer contracts ([tool.importlinter]: the core imports neither
# Dagster nor the demo) and types ([tool.mypy]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: $(STAMP) browser postgres
	$(VENV)/bin/python -m pytest -q -ra --durations=15

clean:
	rm -rf outputs .dagster_home
