#!/usr/bin/env bash
# test.sh - start every engine the tests need, then run lint, types and the test suite.
# Engines that should be up but are not make the run FAIL (CMAN_REQUIRE_ENGINES=1),
# never skip. Extra arguments go to pytest (one run, as given).
#
# Without arguments, the whole suite in parts, so CI stays well under 45 minutes:
#   1. everything but the soak, the provisioning tests, the CPU-rate tests and the daemon
#      restarts, and beside it, in their own pytest processes one after the other (their own
#      resource prefixes), the 10-minute soak (marker `slow`) and the docker-host and
#      registry-mirror provisioning (marker `provisioning`, minutes of debootstrap and nested Docker);
#   2. once both are done, on a quiet host, the tests that measure CPU rates (`cpu_timing`);
#   3. last, the tests that stop and start the engines' daemons (`restarts`).
# The run fails if any part fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-engines.sh
bash scripts/install.sh
export CMAN_REQUIRE_ENGINES=1
.venv/bin/ruff check cman tests benchmarks
.venv/bin/mypy -p cman
if (( $# )); then
    exec .venv/bin/python -m pytest -q --durations=25 "$@"
fi

side_log=$(mktemp /tmp/cman-side.XXXXXX.log)
(
    soak=0; .venv/bin/python -m pytest -q -s -p no:cacheprovider -m slow tests/integration/test_soak.py || soak=$?
    prov=0; .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 -m "provisioning and not restarts" \
        || prov=$?
    echo "== beside the suite: soak exit $soak, provisioning exit $prov =="
    (( soak == 0 && prov == 0 ))
) >"$side_log" 2>&1 &
side_pid=$!
main=0; .venv/bin/python -m pytest -q --durations=25 -m "not slow and not provisioning and not restarts and not cpu_timing" \
    || main=$?
soak=0; wait "$side_pid" || soak=$?
echo "== soak and provisioning (ran beside the suite above; exit $soak) =="
cat "$side_log"; rm -f "$side_log"
cpu=0; .venv/bin/python -m pytest -q -p no:cacheprovider -m "cpu_timing and not restarts" || cpu=$?
restarts=0; .venv/bin/python -m pytest -q -s -p no:cacheprovider -m restarts || restarts=$?
echo "== exit codes: suite $main, soak and provisioning $soak, CPU rates $cpu, daemon restarts $restarts =="
(( main == 0 && soak == 0 && cpu == 0 && restarts == 0 ))
