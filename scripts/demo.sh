#!/usr/bin/env bash
# demo.sh - from a fresh Debian machine (as root): install everything, start the
# engines, prepare a local image, and run cman's main job end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-engines.sh
bash scripts/install.sh
export PATH="$(pwd)/.venv/bin:$PATH"
set -x
cman engine status
cman --backend docker pull 127.0.0.1:5000/cman/busybox:latest
cman --backend docker run --rm 127.0.0.1:5000/cman/busybox:latest echo hello from docker
cman --backend docker run -d --name cman-demo 127.0.0.1:5000/cman/busybox:latest sleep 30
cman ps -a
cman ps -a --json
cman exec cman-demo sh -c 'echo hello from exec'
cman rm -f cman-demo
