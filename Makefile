# `make test` and `make demo` set up everything they need: a virtual environment in .venv with
# kzoo installed in editable mode.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: test demo bench-mnist lint clean

$(BIN)/.kzoo-installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: $(BIN)/.kzoo-installed
	$(BIN)/python -m pytest -q

demo: $(BIN)/.kzoo-installed
	$(BIN)/kzoo train lenet5_mnist_sample

bench-mnist: $(BIN)/.kzoo-installed
	$(BIN)/python bench/accuracy.py softmax_regression_mnist lenet5_mnist --data-dir ../shared/data

lint: $(BIN)/.kzoo-installed
	$(BIN)/ruff check kzoo tests bench

clean:
	rm -rf $(VENV) runs build *.egg-info
