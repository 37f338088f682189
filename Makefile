# Two commands on a fresh machine:  `make demo`  and  `make test`  (both idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_WS ?= demo_ws

.PHONY: demo test sysdeps venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@bash scripts/install_sysdeps.sh

demo: $(STAMP) sysdeps
	$(VENV)/bin/jadwal demo -w $(DEMO_WS)

test: $(STAMP) sysdeps
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900

clean:
	rm -rf $(DEMO_WS) .pytest_cache
