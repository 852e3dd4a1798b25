# The two set-up commands of the README: `make demo` and `make test`.
# Both install the project into a project-local virtual environment first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

# setup.py and the C kernel: a change rebuilds the compiled OATH framing (in place, with the editable install)
$(STAMP): pyproject.toml setup.py aurora_pipeline/ingest/_oath_framing.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from its exact pin, so nothing below can pull a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aurora-pipeline demo --workdir demo_out

# Two test processes (pytest-xdist), each module in one of them: most of the suite waits on
# real servers and subprocesses, so two keep a 2-core machine busy. PYTEST_ARGS="-n 0" runs one.
# --no-loadscope-reorder: modules are handed out in the order tests/conftest.py sorts them
# (the slowest first), not by their number of tests, which left a 2-minute test for the end.
test: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile \
		--no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_out
