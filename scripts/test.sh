#!/usr/bin/env bash
# test.sh - start every engine the tests need, then run lint, types and the test suite.
# Engines that should be up but are not make the run FAIL (CMAN_REQUIRE_ENGINES=1),
# never skip. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-engines.sh
bash scripts/install.sh
export CMAN_REQUIRE_ENGINES=1
.venv/bin/ruff check cman tests benchmarks
.venv/bin/mypy -p cman
exec .venv/bin/python -m pytest -q --durations=25 "$@"
