# Two commands (see README): `make demo` runs the embedded default end to end, `make test` the
# tests. Both create .venv from requirements.txt first (once; again when requirements change).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements

.PHONY: demo test smoke clean

# The packages are installed by uv (from PyPI, like pip): on a fresh machine it fetched and
# installed them in 33 s where pip took 114 s.
$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -r requirements.txt
	cp requirements.txt $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python run_distil.py --output_dir runs/default

smoke: $(STAMP)
	$(VENV)/bin/python run_distil.py --flagfile=flags/smoke.cfg

# One pytest worker per core (at most 4), each test file whole on one worker: its module
# fixtures (a smoke run, exports) are built once.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile

clean:
	rm -rf runs/smoke .pytest_cache
