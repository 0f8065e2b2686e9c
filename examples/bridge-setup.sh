#!/usr/bin/env bash
# bridge-setup.sh - a cman network end to end: create a bridge network with a fixed
# subnet, DNS settings and no inter-container traffic (--no-icc), run two containers
# on it, show what they can reach, then remove everything (also on Ctrl-C or error).
#
#   BACKEND=docker IMAGE=local/busybox SUBNET=10.203.200.0/24 examples/bridge-setup.sh
#
# Only the containers, their bridge and the host are contacted. The DNS servers are
# documentation addresses: they show up in resolv.conf, no query is sent to them.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-docker}
IMAGE=${IMAGE:-local/busybox}
SUBNET=${SUBNET:-10.203.200.0/24}
NET=${NET:-cmandemo-$$}
CMAN=(python3 -m cman --backend "$BACKEND")
prefix=${SUBNET%.*}                 # 10.203.200
A=$NET-a B=$NET-b

cleanup() {
    "${CMAN[@]}" rm -f "$A" "$B" >/dev/null 2>&1 || true
    "${CMAN[@]}" network rm -f "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
reach() {  # reach FROM ADDR: ping (IP) and arping (layer 2), printed as yes/no
    local ip l2
    "${CMAN[@]}" exec "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1 && ip=yes || ip=no
    "${CMAN[@]}" exec "$1" arping -c 1 -w 2 -I eth0 "$2" >/dev/null 2>&1 && l2=yes || l2=no
    printf '  %-22s -> %-15s ping: %-3s  arping: %s\n' "$1" "$2" "$ip" "$l2"
}

step "create $BACKEND:$NET ($SUBNET, no ICC); a second create with the same spec changes nothing"
"${CMAN[@]}" network create "$NET" --subnet "$SUBNET" --no-icc \
    --dns 192.0.2.53 --dns-search demo.test
"${CMAN[@]}" network create "$NET" --subnet "$SUBNET" --no-icc \
    --dns 192.0.2.53 --dns-search demo.test

step "a different spec under the same name is refused, with the difference"
"${CMAN[@]}" network create "$NET" --subnet "$SUBNET" --icc || true

step "two containers with fixed addresses"
"${CMAN[@]}" run -d --name "$A" --network "$NET" --ip "$prefix.10" "$IMAGE" sleep 600 >/dev/null
"${CMAN[@]}" run -d --name "$B" --network "$NET" --ip "$prefix.11" "$IMAGE" sleep 600 >/dev/null
"${CMAN[@]}" network inspect "$NET"

step "what $A reaches: the gateway yes, its peer neither by IP nor at layer 2"
reach "$A" "$prefix.1"
reach "$A" "$prefix.11"

step "resolv.conf inside $A"
"${CMAN[@]}" exec "$A" cat /etc/resolv.conf

step "removing the network is refused while containers use it"
"${CMAN[@]}" network rm "$NET" || true

step "clean up"
"${CMAN[@]}" rm -f "$A" "$B"
"${CMAN[@]}" network rm "$NET"
