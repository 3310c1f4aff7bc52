# The README's two commands are `make demo` and `make test`; each sets up what it needs.
#
# Everything Python goes into a virtual environment ($(VENV)), made from $(PYTHON), so the same
# commands work on a stock Debian or Ubuntu python3, which refuses system-wide pip installs
# (PEP 668, "externally-managed-environment"), as well as on pyenv or macOS.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: demo test test-unit test-sandbox test-integration test-unprivileged lint release bench clean

# System packages, only as root on Debian/Ubuntu (elsewhere, install them yourself or go without):
# bubblewrap (the strongest sandbox tier) for everything; chromium and PostgreSQL for the tests.
define apt_install
@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for want in $(1); do \
	    case "$$want" in \
	      bubblewrap) command -v bwrap >/dev/null || missing="$$missing bubblewrap";; \
	      chromium) command -v chromium >/dev/null || missing="$$missing chromium";; \
	      postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql";; \
	      python3-venv) case "$$(command -v $(PYTHON))" in /usr/bin/*) \
	        dpkg -s python3-venv >/dev/null 2>&1 || missing="$$missing python3-venv";; esac;; \
	    esac; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi
endef

# An editable install does not copy the server-extension switch a wheel installs
# (jupyter-config/autograder-grading-view.json), so it is copied into the venv here: that enables
# the grading view beside the formgrader.
ENABLE_GRADING_VIEW = mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d && \
	cp jupyter-config/autograder-grading-view.json $(VENV)/etc/jupyter/jupyter_server_config.d/

$(VENV)/.created:
	$(call apt_install,python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@touch $@

# What the demo needs: the grader and nbgrader (no browser, no database server).
$(VENV)/.instructor: pyproject.toml $(VENV)/.created
	$(call apt_install,bubblewrap)
	$(PY) -m pip install -q -e ".[instructor]"
	$(ENABLE_GRADING_VIEW)
	@touch $@

# Everything: the test suite's kernels, PostgreSQL, the browser tests, lint and types.
$(VENV)/.dev: pyproject.toml $(VENV)/.created
	$(call apt_install,bubblewrap chromium postgresql)
	$(PY) -m pip install -q -e ".[dev]"
	$(ENABLE_GRADING_VIEW)
	@touch $@ $(VENV)/.instructor

# Add the course to a fresh `nbgrader quickstart` course (python -m autograder add), grade an example
# class end to end and print the score table.
demo: $(VENV)/.instructor
	$(PY) -m autograder.dev.demo

# Test files in parallel worker processes (pytest-xdist), a file to a worker: a file's fixtures
# (a graded class, a running formgrader) are built once. Up to 4 workers: each test already runs
# its graders in parallel.
PARALLEL = -n auto --maxprocesses 4 --dist loadfile

# What CI runs (.ci/run): lint and types, every test tier, then (as root) the threat tests again
# as an unprivileged user.
test: lint
	$(PY) -m pytest -q $(PARALLEL) tests
	@$(MAKE) --no-print-directory test-unprivileged

# The threat tests as uid 65534, as a user on a desktop or a JupyterHub pod runs the grader: the
# sandbox's limits must bind the submission, never the user. Run by `make test` when it is root.
test-unprivileged: $(VENV)/.dev
	@if [ "$$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then \
	  echo "test-unprivileged: needs root and setpriv (an unprivileged run of make test already is one)"; \
	elif ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$(CURDIR)/tests/sandbox/test_threats.py" \
	    -a -x "$(abspath $(PY))"; then \
	  echo "test-unprivileged: SKIPPED: uid 65534 cannot read this checkout; put it under a world-readable path"; \
	else \
	  home=$$(mktemp -d) && chmod 777 "$$home" && \
	  setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$$home" \
	    PATH="$(abspath $(VENV))/bin:/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1 \
	    "$(abspath $(PY))" -m pytest -q -p no:cacheprovider tests/sandbox/test_threats.py; \
	  status=$$?; rm -rf "$$home"; exit $$status; \
	fi

# In-process tests of the engine and the content, seconds.
test-unit: $(VENV)/.dev
	$(PY) -m pytest -q tests -m "not sandbox and not slow"

# Tests that run submissions in the real sandbox.
test-sandbox: $(VENV)/.dev
	$(PY) -m pytest -q tests -m "sandbox and not slow"

# Kernels, nbgrader, PostgreSQL, the browser.
test-integration: $(VENV)/.dev
	$(PY) -m pytest -q $(PARALLEL) tests -m slow

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Regenerate release/ and solutions/ from source/ (nbgrader generate_assignment).
release: $(VENV)/.instructor
	$(PY) -m autograder release

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_checks.py
	$(PY) benchmarks/bench_grading.py

clean:
	rm -rf build $(VENV)
