# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup release demo test test-fast bench clean

# System packages (bubblewrap sandbox, chromium for browser tests, PostgreSQL for the gradebook
# test) when running as root on Debian, then the Python requirements.
setup: .setup.stamp
.setup.stamp: requirements.txt Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi
	$(PYTHON) -m pip install -q -r requirements.txt
	@touch $@

# Regenerate release/ and solutions/ from source/ (nbgrader generate_assignment).
release: setup
	$(PYTHON) -m autograder release

# Grade a bundled example class end to end and print the score table.
demo: setup
	$(PYTHON) -m autograder.demo

test: setup
	$(PYTHON) -m pytest -q tests

test-fast: setup
	$(PYTHON) -m pytest -q tests -m "not slow"

bench: setup
	$(PYTHON) benchmarks/bench_grading.py

clean:
	rm -rf build .setup.stamp
