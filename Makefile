# livegen: `make run` installs everything into .venv and starts the daemon; `make test` runs the suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install install-dev system-deps run test bench clean

$(BIN)/livegen: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q .
	touch $@

install: $(BIN)/livegen

# the test and training extras; torch==2.13.0 is the CPU build
install-dev:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,test]'

# JACK, where there is no ALSA sequencer (containers, servers): the daemon starts a dummy server
system-deps:
	@if [ ! -e /dev/snd/seq ] && ! command -v jackd >/dev/null; then \
	  echo "no ALSA sequencer here: installing JACK (jackd2)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends jackd2; fi

run: system-deps install
	$(BIN)/livegen run $(ARGS)

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/live_timing.py

clean:
	rm -rf $(VENV) build *.egg-info
