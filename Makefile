# twinloop: `make demo` runs the simulated Real2Sim2Real demo, `make test` runs the tests.
# Both set everything up first (idempotent: a second run only checks stamps).
SHELL := /bin/bash
ENV := . ./twinloop_env.sh &&
ARGS ?=

.PHONY: setup test demo doctor clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(ENV) python -m pytest $(ARGS)

demo: setup
	@$(ENV) python -m twinloop_bringup.cli demo $(ARGS)

doctor: setup
	@$(ENV) python -m twinloop_bringup.cli doctor

clean:
	rm -rf build install log twinloop_env.sh
