# One-command set-up: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench bench-targets bench-sim bench-engine bench-train bench-cost clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/neurosal demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_targets.py
	$(BIN)/python benchmarks/bench_crossbar.py
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_train.py
	cd benchmarks && ../$(BIN)/python cost_tables.py

bench-targets: $(STAMP)
	$(BIN)/python benchmarks/bench_targets.py

bench-sim: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py

bench-engine: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

bench-train: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

bench-cost: $(STAMP)
	cd benchmarks && ../$(BIN)/python cost_tables.py

clean:
	rm -rf $(VENV) build *.egg-info runs
