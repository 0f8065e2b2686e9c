#!/usr/bin/env bash
# bridge-setup.sh - a bridge set-up script written with cman. On each backend it creates an
# isolated network (fixed subnet, DNS settings, no inter-container traffic), starts two
# containers on it, shows their addresses and what they can reach, then removes everything
# (also on Ctrl-C or error).
#
#   examples/bridge-setup.sh                    # every reachable backend
#   BACKENDS="docker lxc" examples/bridge-setup.sh
#
# Run it after the README's set-up (bash scripts/demo.sh). Only the containers, their
# bridges and the host are contacted. The DNS server is a documentation address: it shows
# up in resolv.conf, no query is sent to it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n ${CMAN:-} ]]; then read -r -a CMAN_CMD <<<"$CMAN"
elif [[ -x .venv/bin/cman ]]; then CMAN_CMD=(.venv/bin/cman)
else CMAN_CMD=(cman); fi
ROOTFS=${ROOTFS:-/var/lib/cman/images/busybox-rootfs.tar.gz}
TAG=cmdemo$(( $$ % 10000 ))
if [[ -z ${BACKENDS:-} ]]; then
    BACKENDS=$("${CMAN_CMD[@]}" engine status --json | python3 -c \
        'import json,sys; print(" ".join(e["backend"] for e in json.load(sys.stdin) if e["reachable"]))' || true)
fi

CLEANUP=()
cleanup() {
    local i
    for ((i=${#CLEANUP[@]}-1; i>=0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
later() { CLEANUP+=("$(printf '%q ' "$@")"); }   # undo steps, run in reverse at exit

step() { printf '\n== %s\n' "$*"; }
reach() {  # reach BACKEND FROM ADDR: ping (IP) and arping (layer 2), printed as yes/no
    local ip l2
    "${CMAN_CMD[@]}" --backend "$1" exec "$2" ping -c 1 -W 2 "$3" >/dev/null 2>&1 && ip=yes || ip=no
    "${CMAN_CMD[@]}" --backend "$1" exec "$2" arping -c 1 -w 2 -I eth0 "$3" >/dev/null 2>&1 && l2=yes || l2=no
    printf '  %-26s -> %-13s ping: %-3s  arping: %s\n' "$2" "$3" "$ip" "$l2"
}

n=0
for backend in $BACKENDS; do
    c=("${CMAN_CMD[@]}" --backend "$backend")
    net=$TAG-${backend:0:3}                  # at most 15 characters: LXD names its bridge after it
    subnet=10.203.$((200 + n)).0/24; prefix=10.203.$((200 + n)); n=$((n + 1))
    a=$TAG-$backend-a b=$TAG-$backend-b

    image=local/busybox
    if [[ $backend != docker ]]; then       # system containers: an image from the rootfs tarball
        image=$TAG-bb
        "${c[@]}" image import "$ROOTFS" "$image" >/dev/null
        later "${c[@]}" image rm --force "$image"
    fi

    step "$backend: network $net ($subnet, no ICC); the same create again changes nothing"
    "${c[@]}" network create "$net" --subnet "$subnet" --no-icc --dns 192.0.2.53 --dns-search demo.test
    later "${c[@]}" network rm -f "$net"
    "${c[@]}" network create "$net" --subnet "$subnet" --no-icc --dns 192.0.2.53 --dns-search demo.test

    step "$backend: a different spec under the same name is refused, with the difference"
    "${c[@]}" network create "$net" --subnet "$subnet" --icc || true

    step "$backend: two containers, one at a fixed address, one allocated by cman"
    "${c[@]}" run -d --name "$a" --network "$net" --ip "$prefix.10" "$image" sleep 600 >/dev/null
    later "${c[@]}" rm -f "$a"
    "${c[@]}" run -d --name "$b" --network "$net" "$image" sleep 600 >/dev/null
    later "${c[@]}" rm -f "$b"
    addr_b=$("${c[@]}" inspect "$b" --json | python3 -c \
        'import json,sys; print(next(iter(json.load(sys.stdin)[0]["addresses"].values())))')
    printf '  %s: %s\n  %s: %s\n' "$a" "$prefix.10" "$b" "$addr_b"

    step "$backend: $a reaches the gateway, not its peer (neither by IP nor at layer 2)"
    reach "$backend" "$a" "$prefix.1"
    reach "$backend" "$a" "$addr_b"

    step "$backend: resolv.conf inside $a"
    "${c[@]}" exec "$a" cat /etc/resolv.conf

    step "$backend: removing the network is refused while containers use it"
    "${c[@]}" network rm "$net" || true
    "${c[@]}" network inspect "$net"
done

step "clean up"
cleanup
CLEANUP=()
echo "  done: no network, bridge, container or rule of this run is left"
