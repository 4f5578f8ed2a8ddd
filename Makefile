# The README's commands. Everything runs in .venv, installed from uv.lock exactly.
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN = $(UV) run --frozen

.PHONY: install demo test lint bench fmt

install: .venv/.installed

.venv/.installed: pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

demo: install
	$(RUN) python -m tenant_backup.demo.run

test: install
	$(RUN) pytest -q -n 2 --dist loadfile  # two processes; a test module stays in one (its database, its servers)

lint: install
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

bench: install
	$(RUN) python -m bench.run

fmt: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .
