#!/usr/bin/env bash
# demo.sh - from a fresh Debian machine (as root): install everything, start the
# engines, prepare local images, and run cman's main job end to end on every engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-engines.sh
bash scripts/install.sh
export PATH="$(pwd)/.venv/bin:$PATH"
ROOTFS=/var/lib/cman/images/busybox-rootfs.tar.gz
cleanup() {
    cman rm -f docker:cman-demo lxd:cman-demo lxc:cman-demo >/dev/null 2>&1 || true
}
trap cleanup EXIT
set -x
cman engine status
# Docker: a real pull from the local registry, then run
cman --backend docker pull 127.0.0.1:5000/cman/busybox:latest
cman --backend docker run --rm 127.0.0.1:5000/cman/busybox:latest echo hello from docker
# LXD and raw LXC: the offline path, an image from a rootfs tarball
cman --backend lxd image import "$ROOTFS" cman-demo-busybox
cman --backend lxd run --rm cman-demo-busybox echo hello from lxd
cman --backend lxc image import "$ROOTFS" cman-demo-busybox
cman --backend lxc run --rm cman-demo-busybox echo hello from lxc
# one container on each engine with the same name, one listing
cman --backend docker run -d --name cman-demo 127.0.0.1:5000/cman/busybox:latest sleep 60
cman --backend lxd run -d --name cman-demo cman-demo-busybox sleep 60
cman --backend lxc run -d --name cman-demo cman-demo-busybox sleep 60
cman ps -a
cman ps -a --json
cman exec lxd:cman-demo sh -c 'echo hello from exec in lxd'
cman stats --no-stream docker:cman-demo lxd:cman-demo lxc:cman-demo
cman rm -f docker:cman-demo lxd:cman-demo lxc:cman-demo
