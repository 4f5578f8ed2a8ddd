# The README's commands. Everything runs in .venv, installed from uv.lock exactly; uv itself is
# installed with pip when the machine has none.
UV_VERSION := 0.13.9
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN = $(UV) run --frozen
UI_PORT ?= 4200

.PHONY: install uv age demo demo-stop ui test lint bench bench-big fmt

install: .venv/.installed age

age:  # Debian's age tool: the suite opens encrypted artifacts with it (tests/test_encryption.py)
	@command -v age >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		apt-get install -y -qq age >/dev/null 2>&1) || \
		echo "warning: the age tool is missing (apt-get install age); tests/test_encryption.py needs it" >&2

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.installed: pyproject.toml uv.lock | uv
	$(UV) sync --frozen --compile-bytecode  # as pip installs: a machine with PYTHONDONTWRITEBYTECODE would compile them in every process
	@touch $@

demo: install
	$(RUN) python -m tenant_backup.demo.run

demo-stop: install
	$(RUN) python -m tenant_backup.demo.run --stop

ui: install
	$(RUN) python -m tenant_backup.demo.ui --port $(UI_PORT)

test: install
	$(RUN) pytest -q -n 2 --dist loadfile  # two processes; a test module stays in one (its database, its servers)

lint: install
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

bench: install  # one 3 M-row tenant (bench/run.py), its incremental chain (bench/incremental.py), many small tenants (bench/tenants.py)
	$(RUN) python -m bench.run
	$(RUN) python -m bench.incremental
	$(RUN) python -m bench.tenants

bench-big: install  # one 30 M-row tenant: peak RSS of backup and restore, the plan's room report (bench/big.py)
	$(RUN) python -m bench.big

fmt: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .
