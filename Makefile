# Two commands from a fresh clone (see README):
#   make demo   set up (no torch needed) and run the demo line
#   make test   set up everything (training extra included) and run lint + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup setup-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamp files: install once, again only when pyproject.toml changes (`make demo` twice does not reinstall).
CORE_STAMP = $(VENV)/.edge-inspect-core.stamp
DEV_STAMP  = $(VENV)/.edge-inspect-dev.stamp

$(CORE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev,hub,openvino]'
	# its requirements are in the train extra, all but opencv-python-headless (see pyproject.toml)
	$(BIN)/pip install -q --no-deps anomalib==2.7.0
	# GigE cameras: PyGObject builds against Debian's girepository-1.0 and cairo headers (.ci/run installs them)
	if pkg-config --exists gobject-introspection-1.0 cairo; then $(BIN)/pip install -q -e '.[gige]'; \
	else echo "[gige] extra left out: apt-get install libgirepository1.0-dev libcairo2-dev (docs/gige.md)"; fi
	touch $@ $(CORE_STAMP)

setup: $(CORE_STAMP)

setup-dev: $(DEV_STAMP)

demo: setup
	$(BIN)/edge-inspect run

lint: setup-dev
	$(BIN)/ruff check .

# pytest exit 5 means "no tests collected": that is a failure here, never a pass.
test: setup-dev lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: setup-dev
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/agent.py
	$(BIN)/python bench/zmq.py
	$(BIN)/python bench/opcua.py
	$(BIN)/python bench/console.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs/tmp
