# Two entry points: `make demo` and `make test`. Both create .venv (Python 3.11) and install on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean browser

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

# Layer contracts (pyproject.toml [tool.importlinter]): the core imports neither Dagster nor the demo.
lint: $(STAMP)
	$(VENV)/bin/lint-imports

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q -ra --durations=15

clean:
	rm -rf outputs .dagster_home
