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
	bash scripts/get-promtool.sh $(VENV)
	touch $(STAMP)

venv: $(STAMP)

test: deps venv
	$(BIN)/pytest -q -ra --durations=25 -n 2 --dist loadfile

# The fast loop: no lab, no sshd (every test under tests/integration is marked).
test-unit: venv
	$(BIN)/pytest -q -m 'not integration'

# The main job: bring up a lab DC (3 headnodes, 2 compute nodes, every core
# service), lose hn0 abruptly, restore everything on hn1, heal back to three
# headnodes (delete hn0, cn0 made a headnode, HA peers on it), and print what
# was measured (RTO, RPO, canaries, fencing, heal steps). Then show the DC.
drill: deps venv
	$(BIN)/sdcadm lab drill --heal --dir $(LAB)
	@echo
	eval "$$($(BIN)/sdcadm lab env --dir $(LAB) hn1)" && \
	  $(BIN)/sdcadm server ls && echo && \
	  $(BIN)/sdcadm check-health -q && echo "every instance is healthy" && \
	  $(BIN)/sdcadm status >/dev/null && echo "sdcadm status: OK"
	@echo "The lab keeps running (hn0 deleted, cn0 a headnode); stop it with: make lab-down"

lab-down: venv
	$(BIN)/sdcadm lab down --dir $(LAB)

lab-destroy: venv
	$(BIN)/sdcadm lab destroy --dir $(LAB)

# Benchmarks (never part of `make test`): each prints one JSON line; the
# figures and how to read them are in docs/performance.md. Quick variants here.
bench: deps venv
	$(BIN)/python bench/server_ls.py
	$(BIN)/python bench/restore_data_cycle.py
	$(BIN)/python bench/sync.py --quick
	$(BIN)/python bench/restore.py --quick
	$(BIN)/python bench/ssh_timeouts.py --runs 3

clean: lab-destroy
	rm -rf $(VENV) *.egg-info
