# Two commands matter: `make demo` runs the pipeline, `make test` runs every check.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo dashboard test lint clean bench-agent bench-agent-e2e bench-analytics bench-api bench-dashboard bench-buffer bench-events bench-ingest bench-wire

# The programs' packages at the versions the images ship (the lock files), the dev tools around
# them. pip refuses an editable install under hashed constraints: the pins alone constrain it.
$(STAMP): pyproject.toml requirements/collector.txt requirements/agent.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	sed -e '/^ *--hash=/d' -e 's/ *\\$$//' requirements/collector.txt requirements/agent.txt \
		> $(VENV)/constraints.txt
	$(VENV)/bin/pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	touch $(STAMP)

# The dashboard's npm packages (exact versions from its lock file) and its build, which
# ships inside the collector's package (collector/web/static): no Node at run time.
DASHBOARD_BUILT := collector/web/static/index.html
dashboard/node_modules/.package-lock.json: dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund

$(DASHBOARD_BUILT): dashboard/node_modules/.package-lock.json dashboard/build.mjs dashboard/index.html $(wildcard dashboard/src/*)
	cd dashboard && npm run --silent check && npm run --silent build

dashboard: $(DASHBOARD_BUILT)

demo: $(STAMP) $(DASHBOARD_BUILT)
	$(VENV)/bin/python scripts/demo.py

test:
	bash scripts/test.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) dashboard/node_modules collector/web/static .demo .coverage .mypy_cache .ruff_cache .pytest_cache

bench-agent: $(STAMP)
	$(VENV)/bin/python bench/agent_bench.py

bench-agent-e2e: $(STAMP)
	$(VENV)/bin/python bench/agent_e2e_bench.py --profile 30000 $(ARGS)

bench-dashboard: $(STAMP) $(DASHBOARD_BUILT)
	bash scripts/need-debs.sh postgresql mosquitto redis-server chromium
	$(VENV)/bin/python bench/dashboard_bench.py $(ARGS)

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
