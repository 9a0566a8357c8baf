# sdcadm: two entry points on a fresh machine, both idempotent.
#   make drill   the main job: set up, bring up the lab, rehearse
#   make test    the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
LAB    ?= $(CURDIR)/.sdcadm-lab
STAMP   = $(VENV)/.installed

.PHONY: all deps venv test test-unit drill lab-down lab-destroy bench clean

all: test

deps:
	@bash scripts/system-deps.sh

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: deps venv
	$(BIN)/pytest -q -ra

test-unit: venv
	$(BIN)/pytest -q -m 'not integration'

# Until the disaster-recovery drill exists, the drill shows a healthy lab:
# its servers, its instances and their health.
drill: deps venv
	$(BIN)/sdcadm lab up --dir $(LAB)
	eval "$$($(BIN)/sdcadm lab env --dir $(LAB) hn0)" && \
	  $(BIN)/sdcadm server ls && echo && \
	  $(BIN)/sdcadm insts && echo && \
	  $(BIN)/sdcadm check-health
	@echo "The lab keeps running; stop it with: make lab-down"

lab-down: venv
	$(BIN)/sdcadm lab down --dir $(LAB)

lab-destroy: venv
	$(BIN)/sdcadm lab destroy --dir $(LAB)

bench: deps venv
	$(BIN)/python bench/server_ls.py

clean: lab-destroy
	rm -rf $(VENV) *.egg-info
