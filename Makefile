# The two commands README gives: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_REPO ?= demo/repo
HOST ?= 127.0.0.1
PORT ?= 8000
GRPC_PORT ?= 8001

.PHONY: setup demo example test docs bench perf-analyzer

setup:
	packaging/setup.sh

example: setup
	$(PY) packaging/example_repo.py --repo $(DEMO_REPO)
	$(VENV)/bin/tunegate models --repo $(DEMO_REPO) list

demo: example
	@echo
	@echo "Serving $(DEMO_REPO): HTTP on http://$(HOST):$(PORT), gRPC on $(HOST):$(GRPC_PORT)"
	@echo "(other ports: make demo PORT=18000 GRPC_PORT=18001). From another shell:"
	@echo "  $(PY) packaging/example_request.py --url http://$(HOST):$(PORT)"
	@echo "  curl -s -X POST http://$(HOST):$(PORT)/v2/models/digits/infer -H 'Content-Type: application/json' -d @packaging/digit0_request.json"
	@echo
	$(VENV)/bin/tunegate serve --repo $(DEMO_REPO) --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

test: setup
	$(PY) -m pytest -p no:cacheprovider

# The documentation site (docs/, Sphinx + MyST) into docs/_build/html; warnings are errors.
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

bench: setup
	$(PY) bench/convert.py

# NVIDIA perf_analyzer for the benchmarks (glibc 2.38 binary run under Debian 13's libc in a
# private folder; not part of setup or test). Prints the wrapper's path.
perf-analyzer:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) packaging/install_perf_analyzer.sh
