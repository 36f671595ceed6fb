# Two entry points: `make reproduce` (the main job) and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0; override (e.g. TORCH_SPEC="torch") to get a CUDA build elsewhere.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: reproduce demo test bench clean

# Building the environment takes a few minutes (torch alone is a large download): each step says
# what it is doing before it starts.
$(BIN)/pfdist: pyproject.toml
	@echo "make: creating the virtual environment $(VENV) (once; later runs reuse it)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make: upgrading pip in $(VENV)"
	$(BIN)/pip install --quiet --upgrade pip
	@echo "make: installing $(TORCH_SPEC) (a large download: this is the longest step)"
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	@echo "make: installing pfdist and its test dependencies into $(VENV)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/pfdist
	@echo "make: $(VENV) is ready"

reproduce: $(BIN)/pfdist
	$(BIN)/pfdist reproduce --preset $(or $(PRESET),quick)

demo: $(BIN)/pfdist
	$(BIN)/pfdist distance examples/teacher.json examples/other.json --num-samples 2000 --out runs/demo.json

test: $(BIN)/pfdist
	$(BIN)/python -m pytest tests

bench: $(BIN)/pfdist
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs
