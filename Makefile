# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(PY) -m pytest

.PHONY: setup test test-slow test-all lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The fast suite (< 15 min on 2 cores). Slow tests: `make test-slow`.
test: setup
	$(PYTEST) -m "not slow"

test-slow: setup
	$(PYTEST) -m slow || [ $$? -eq 5 ]  # 5: none collected

test-all: setup
	$(PYTEST)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Whole chain, offline: dataset -> train -> bundle -> daemon -> MQTT -> bench.
demo: setup
	$(PY) -m trainer.demo

# Latency of float/int8 vs Coral's reference int8 model, and the loop vs bare inference,
# on the demo's bundle (run `make demo` first) or BUNDLE=path.
BUNDLE ?= demo-out/bundle
REFERENCE ?= ../shared/reference/tf2_mobilenet_v2_1.0_224_ptq.tflite
bench: setup
	$(VENV)/bin/sightwire bench $(BUNDLE) $(wildcard $(REFERENCE)) --threads 1,2 --runs 200 \
		--loop-sizes 640x480,1280x720 --loop-frames 300 --frame-formats jpg,bmp,raw --json bench.json --plot bench.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
