# `make test` and `make demo` set up everything they need: a virtual environment in .venv with
# kzoo installed in editable mode (`make demo` with the runtime dependencies only, `make test`
# with the dev extra too).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: test test-fast demo docs browser bench-mnist bench-speed lint clean

$(BIN)/.kzoo-installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'setuptools>=64' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(BIN)/.kzoo-runtime: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

test: $(BIN)/.kzoo-installed browser
	$(BIN)/python -m pytest -q -n 2

# the quick loop: everything but slow, multi-process, browser, notebook and real-data tests
test-fast: $(BIN)/.kzoo-installed
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not multiprocess and not browser and not notebook and not real_data"

# The report test opens report.html in headless Chromium; install it where we may (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed: the report's browser test will be skipped"

demo: $(BIN)/.kzoo-runtime
	$(BIN)/kzoo train lenet5_mnist_sample

# the documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link
docs: $(BIN)/.kzoo-installed
	$(BIN)/mkdocs build --strict

bench-mnist: $(BIN)/.kzoo-installed
	$(BIN)/python bench/accuracy.py softmax_regression_mnist lenet5_mnist --data-dir ../shared/data

# kzoo vs plain Keras, op determinism, XLA and JAX (and PyTorch, given --torch-python): ~35 min
bench-speed: $(BIN)/.kzoo-installed
	$(BIN)/python bench/speed.py --data-dir ../shared/data

lint: $(BIN)/.kzoo-installed
	$(BIN)/ruff check kzoo tests bench

clean:
	rm -rf $(VENV) runs build *.egg-info
