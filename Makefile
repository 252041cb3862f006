# make demo : set up .venv and run the whole pipeline on the built-in phantom dataset (writes under demo/ only)
# make figures: the demo, then its figures copied over the README's (image/example.png, image/pipeline.png)
# make test : set up .venv and run the tests
# make test-fast: the tests without the slow end-to-end ones (the edit loop; under 3 minutes)
# make bench: set up .venv and run the benchmarks (bench/run.py; real sizes, minutes)
# make clean-demo: remove the demo's output
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: demo figures test test-fast bench clean-demo

$(VENV)/installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

test: $(VENV)/installed
	$(BIN)/python -m pytest -q tests

test-fast: $(VENV)/installed
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: $(VENV)/installed
	$(BIN)/python demo.py --work-dir $(DEMO)

figures: $(VENV)/installed
	$(BIN)/python demo.py --work-dir $(DEMO) --readme-figures

bench: $(VENV)/installed
	$(BIN)/python bench/run.py

clean-demo:
	rm -rf $(DEMO)
