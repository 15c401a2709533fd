# Two commands on a new machine: `make demo` (the CPU pipeline, outputs/demo/) and `make test` (the test suite).
# Each sets up .venv on first use (setup.sh), and again only when setup.sh or a requirements file changes.
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: demo test

$(INSTALLED): setup.sh requirements.txt requirements-dev.txt requirements-xcodec2.txt
	bash setup.sh

demo: $(INSTALLED)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run.sh

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest
