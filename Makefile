# Two commands matter: `make demo` runs the pipeline, `make test` runs every check.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean bench-agent bench-agent-e2e bench-analytics bench-api bench-buffer bench-events bench-ingest bench-wire

# The programs' packages at the versions the images ship (the lock files), the dev tools around
# them. pip refuses an editable install under hashed constraints: the pins alone constrain it.
$(STAMP): pyproject.toml requirements/collector.txt requirements/agent.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	sed -e '/^ *--hash=/d' -e 's/ *\\$$//' requirements/collector.txt requirements/agent.txt \
		> $(VENV)/constraints.txt
	$(VENV)/bin/pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python scripts/demo.py

test:
	bash scripts/test.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .demo .coverage .mypy_cache .ruff_cache .pytest_cache

bench-agent: $(STAMP)
	$(VENV)/bin/python bench/agent_bench.py

bench-agent-e2e: $(STAMP)
	$(VENV)/bin/python bench/agent_e2e_bench.py --profile 30000 $(ARGS)

bench-analytics: $(STAMP)
	bash scripts/need-debs.sh postgresql mosquitto redis-server
	$(VENV)/bin/python bench/analytics_bench.py $(ARGS)

bench-api: $(STAMP)
	bash scripts/need-debs.sh postgresql mosquitto redis-server wrk
	$(VENV)/bin/python bench/api_bench.py $(ARGS)

bench-buffer: $(STAMP)
	$(VENV)/bin/python bench/buffer_bench.py

bench-events: $(STAMP)
	$(VENV)/bin/python bench/events_bench.py $(ARGS)

bench-ingest: $(STAMP)
	$(VENV)/bin/python bench/ingest_bench.py

bench-wire: $(STAMP)
	$(VENV)/bin/python bench/wire_bench.py
