#!/usr/bin/env bash
# setup-engines.sh - prepare the container engines cman drives (Docker, LXD, raw LXC)
# on a Debian 12 machine without systemd. Run as root. Idempotent: on a machine that
# is already set up it only checks and returns within a few seconds.
#
# What it ensures:
#   1. Debian packages (installed only when missing)
#   2. dockerd running                      (log /var/log/cman-dockerd.log)
#   3. a local registry on 127.0.0.1:5000   (log /var/log/cman-registry.log)
#   4. LXD running and initialised          (log /var/log/cman-lxd.log)
#   5. raw LXC tools usable
#   6. busybox rootfs tarball               /var/lib/cman/images/busybox-rootfs.tar.gz
#   7. docker images local/busybox:latest and 127.0.0.1:5000/cman/busybox:latest
# Daemons started here are detached (own session) and keep running after the script;
# their PIDs are written to /run/cman-{dockerd,registry,lxd}.pid.
#
# Network: only loopback and the project's bridge are used; nothing here contacts
# any other address except apt-get (the configured Debian mirror) when packages are missing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export NO_PROXY="127.0.0.1,localhost,${NO_PROXY:-}" no_proxy="127.0.0.1,localhost,${no_proxy:-}"

CMAN_DIR=/var/lib/cman
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_DIR=$CMAN_DIR/registry
REGISTRY_CONFIG=$REGISTRY_DIR/config.yml
IMAGES_DIR=$CMAN_DIR/images
ROOTFS_TARBALL=$IMAGES_DIR/busybox-rootfs.tar.gz
DOCKER_LOCAL_TAG=local/busybox:latest
DOCKER_REGISTRY_REPO=cman/busybox
DOCKER_REGISTRY_TAG=$REGISTRY_ADDR/$DOCKER_REGISTRY_REPO:latest
# Daemons started here get this as their HTTP(S) proxy: nothing listens there, so any
# attempt to reach the outside (LXD's daily download of instance types from
# images.linuxcontainers.org, an accidental `docker pull` from Docker Hub) fails at once
# on loopback instead of resolving names through the host's DNS. Loopback (the local
# registry) is never proxied. Set CMAN_EGRESS_PROXY= (empty) to disable.
CMAN_EGRESS_PROXY=${CMAN_EGRESS_PROXY-http://127.0.0.1:9}
LXD_BRIDGE=lxdbr0
LXD_BRIDGE_ADDR=10.201.0.1/24
PACKAGES=(docker.io lxc lxd lxd-client busybox-static bridge-utils iptables iproute2
          debootstrap docker-registry dnsmasq-base cgroupfs-mount python3-venv python3-pip curl openssh-server
          skopeo umoci)

T0=$(date +%s.%N)
STARTED=()     # what this run started/created, for the summary

log()  { printf '[setup-engines] %s\n' "$*" >&2; }
die()  { printf '[setup-engines] ERROR: %s\n' "$*" >&2; exit 1; }
# die_with_log MSG LOGFILE: fail and show the end of a daemon's log
die_with_log() {
    printf '[setup-engines] ERROR: %s\n' "$1" >&2
    if [[ -f $2 ]]; then
        printf '[setup-engines] last lines of %s:\n' "$2" >&2
        tail -n 25 "$2" | sed 's/^/    /' >&2
    fi
    exit 1
}
# wait_for SECONDS CMD...: poll CMD every 0.25 s until it succeeds or time runs out
wait_for() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.25
    done
}
# start_detached NAME LOGFILE CMD...: start CMD in its own session, stdin closed,
# output to LOGFILE; survives the end of this script. Records the PID.
start_detached() {
    local name=$1 logfile=$2; shift 2
    mkdir -p "$(dirname "$logfile")"
    if [[ -n $CMAN_EGRESS_PROXY ]]; then
        local np="127.0.0.1,localhost,::1,10.201.0.0/24"
        set -- env "HTTP_PROXY=$CMAN_EGRESS_PROXY" "HTTPS_PROXY=$CMAN_EGRESS_PROXY" "NO_PROXY=$np" \
            "http_proxy=$CMAN_EGRESS_PROXY" "https_proxy=$CMAN_EGRESS_PROXY" "no_proxy=$np" "$@"
    fi
    # Without job control a background job is not a process-group leader, so setsid
    # exec()s the command directly and $! is the daemon's own PID.
    # From "/": a daemon must not hold on to (or restart into) this checkout's folder.
    local here=$PWD
    cd /
    setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
    local pid=$!
    cd "$here"
    echo "$pid" > "/run/cman-$name.pid"
    STARTED+=("$name (pid $pid)")
    log "started $name, pid $pid, log $logfile"
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

BUILD_TMP=""          # temp dir of the rootfs build
TEMP_POLICY=0         # 1 while our temporary policy-rc.d is in place
cleanup() {
    if [[ -n $BUILD_TMP ]]; then rm -rf "$BUILD_TMP"; fi
    if (( TEMP_POLICY )); then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# --------------------------------------------------------------------------- 1. packages
missing=()
status=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
for p in "${PACKAGES[@]}"; do
    grep -qx "$p ii *" <<<"$status" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    log "installing missing packages: ${missing[*]}"
    # Keep package scripts from starting daemons with Debian's configs (docker-registry
    # would listen on :5000 on every interface, lxc-net would create lxcbr0, ...).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from cman setup-engines.sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        TEMP_POLICY=1
    fi
    apt-get -o DPkg::Lock::Timeout=300 update -q
    apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}"
    STARTED+=("installed packages: ${missing[*]}")
    if (( TEMP_POLICY )); then rm -f /usr/sbin/policy-rc.d; TEMP_POLICY=0; fi
fi

# cgroups: normally mounted at boot; mount the v1 hierarchies if nothing is there.
if ! mountpoint -q /sys/fs/cgroup/devices && ! [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    log "mounting cgroup hierarchies (cgroupfs-mount)"
    cgroupfs-mount
fi

# --------------------------------------------------------------------------- 2. dockerd
if ! docker info >/dev/null 2>&1; then
    if [[ -S /var/run/docker.sock ]] && pgrep -x dockerd >/dev/null; then
        log "dockerd process exists but does not answer yet; waiting"
    else
        start_detached dockerd /var/log/cman-dockerd.log dockerd
    fi
    wait_for 60 docker info \
        || die_with_log "dockerd did not answer 'docker info' within 60 s" /var/log/cman-dockerd.log
fi

# --------------------------------------------------------------------------- 3. registry
mkdir -p "$REGISTRY_DIR/data"
registry_config=$(cat <<EOF
# Written by cman scripts/setup-engines.sh: local registry for tests, loopback only, no auth.
version: 0.1
log:
  level: info
  fields:
    service: cman-registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
)
if [[ ! -f $REGISTRY_CONFIG ]] || [[ "$(cat "$REGISTRY_CONFIG")" != "$registry_config" ]]; then
    printf '%s\n' "$registry_config" > "$REGISTRY_CONFIG"
fi
registry_up() { curl -sf --noproxy '*' -o /dev/null --max-time 2 "http://$REGISTRY_ADDR/v2/"; }
if ! registry_up; then
    start_detached registry /var/log/cman-registry.log docker-registry serve "$REGISTRY_CONFIG"
    wait_for 30 registry_up \
        || die_with_log "registry did not answer on http://$REGISTRY_ADDR/v2/ within 30 s" /var/log/cman-registry.log
fi

# --------------------------------------------------------------------------- 4. LXD
lxd_up() { lxc query /1.0 >/dev/null 2>&1; }
if ! lxd_up; then
    # The daemon itself, not one of its helpers (lxd forkexec, forkproxy...) that outlive it.
    if ! pgrep -f '^(\S*\/)?lxd( --|$)' >/dev/null; then
        start_detached lxd /var/log/cman-lxd.log lxd --group root
    fi
    lxd waitready --timeout 60 >/dev/null 2>&1 && wait_for 10 lxd_up \
        || die_with_log "LXD did not become ready within 60 s" /var/log/cman-lxd.log
fi

lxd_needs_init() {
    lxc storage show default >/dev/null 2>&1 || return 0
    lxc network show "$LXD_BRIDGE" >/dev/null 2>&1 || return 0
    local prof; prof=$(lxc profile device list default 2>/dev/null) || return 0
    grep -qx root <<<"$prof" && grep -qx eth0 <<<"$prof" || return 0
    return 1
}
if lxd_needs_init; then
    log "initialising LXD (pool default, bridge $LXD_BRIDGE $LXD_BRIDGE_ADDR, default profile)"
    # raw.dnsmasq no-resolv: LXD's dnsmasq must never forward container DNS queries to
    # the host's upstream resolver (only loopback/project bridges may see traffic).
    if ! lxd init --preseed <<EOF
storage_pools:
- name: default
  driver: dir
networks:
- name: $LXD_BRIDGE
  type: bridge
  config:
    ipv4.address: $LXD_BRIDGE_ADDR
    ipv4.nat: "false"
    ipv6.address: none
    raw.dnsmasq: no-resolv
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
    eth0:
      name: eth0
      network: $LXD_BRIDGE
      type: nic
EOF
    then
        die_with_log "lxd init --preseed failed" /var/log/cman-lxd.log
    fi
    STARTED+=("LXD init (pool default, $LXD_BRIDGE)")
fi

# Same egress guard persisted in LXD's own config, so it holds when someone restarts
# LXD by hand without the environment above.
if [[ -n $CMAN_EGRESS_PROXY ]] && [[ $(lxc config get core.proxy_https 2>/dev/null) != "$CMAN_EGRESS_PROXY" ]]; then
    lxc config set core.proxy_https "$CMAN_EGRESS_PROXY"
    lxc config set core.proxy_http "$CMAN_EGRESS_PROXY"
    lxc config set core.proxy_ignore_hosts "127.0.0.1,localhost,::1"
    STARTED+=("LXD core.proxy_http(s)=$CMAN_EGRESS_PROXY")
fi

# Docker sets the FORWARD policy to DROP and br_netfilter makes bridged traffic go
# through it: let containers on lxdbr0 talk to each other.
if iptables -n -L DOCKER-USER >/dev/null 2>&1 && ip link show "$LXD_BRIDGE" >/dev/null 2>&1; then
    iptables -C DOCKER-USER -i "$LXD_BRIDGE" -o "$LXD_BRIDGE" -j ACCEPT 2>/dev/null \
        || iptables -I DOCKER-USER -i "$LXD_BRIDGE" -o "$LXD_BRIDGE" -j ACCEPT
fi

# --------------------------------------------------------------------------- 5. raw LXC
lxc-create --version >/dev/null 2>&1 || die "lxc-create does not work"
if ! lcc=$(lxc-checkconfig 2>&1); then
    die "lxc-checkconfig failed: $lcc"
fi
# "missing" lines other than VLAN/macvlan-style optional features are worth a warning
if grep -iE ': *(missing|required)' <<<"$lcc" | grep -viE 'vlan' | grep -q .; then
    log "warning: lxc-checkconfig reports:"; grep -iE ': *(missing|required)' <<<"$lcc" | grep -viE 'vlan' >&2 || true
fi

# --------------------------------------------------------------------------- 6. rootfs tarball
build_rootfs() {
    local r
    BUILD_TMP=$(mktemp -d /tmp/cman-rootfs.XXXXXX)
    r=$BUILD_TMP/rootfs
    mkdir -p "$r"/{bin,sbin,etc,dev,proc,sys,tmp,root,run,var/log,etc/udhcpc}
    chmod 1777 "$r/tmp"; chmod 0700 "$r/root"
    install -m 0755 /bin/busybox "$r/bin/busybox"
    local a
    while read -r a; do
        [[ -n $a && $a != busybox ]] && ln -sf busybox "$r/bin/$a"
    done < <("$r/bin/busybox" --list)
    ln -sf ../bin/busybox "$r/sbin/init"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
    echo cman > "$r/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
    : > "$r/etc/resolv.conf"
    # busybox init as PID 1 of a system container (LXD/LXC mount /proc, /sys, /dev
    # themselves). No ::respawn/::askfirst on a tty: there is no console to ask on;
    # init simply stays up waiting for signals. SIGUSR2 = poweroff, SIGTERM = reboot.
    cat > "$r/etc/inittab" <<'EOF'
::sysinit:/bin/mkdir -p /run /tmp /var/log
::sysinit:/bin/ip link set lo up
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
EOF
    # udhcpc's default script: applies a lease (address + default route) to the interface.
    # Usage inside a container: udhcpc -i eth0 -q -n   (DNS is left alone: resolv.conf stays empty)
    cat > "$r/etc/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            ip -4 route del default dev "$interface" 2>/dev/null
            for gw in $router; do ip -4 route add default via "$gw" dev "$interface"; break; done
        fi ;;
esac
exit 0
EOF
    chmod 0755 "$r/etc/udhcpc/default.script"
    # Plain rootfs: member names relative without "./" (bin/busybox, etc/passwd, ...),
    # root-owned, deterministic (sorted, fixed mtime, gzip -n) so rebuilds give the same bytes.
    mkdir -p "$IMAGES_DIR"
    (cd "$r" && tar --sort=name --mtime='2024-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
        -cf - bin dev etc proc root run sbin sys tmp var) | gzip -9n > "$ROOTFS_TARBALL.tmp"
    mv -f "$ROOTFS_TARBALL.tmp" "$ROOTFS_TARBALL"
    rm -rf "$BUILD_TMP"; BUILD_TMP=""
}
if [[ ! -s $ROOTFS_TARBALL ]]; then
    log "building $ROOTFS_TARBALL"
    build_rootfs
    STARTED+=("built $ROOTFS_TARBALL")
fi
ROOTFS_SHA=$(sha256sum "$ROOTFS_TARBALL" | cut -d' ' -f1)

# --------------------------------------------------------------------------- 7. docker images
# The images carry the tarball's sha256 as a label. local/busybox is (re)made when the
# label does not match the tarball (missing, tarball rebuilt, or an image from elsewhere):
# from the registry's copy when that one matches (one image and digest everywhere),
# else by `docker import`, followed by a push.
image_sha() { docker image inspect -f '{{ index .Config.Labels "org.cman.rootfs-sha256" }}' "$1" 2>/dev/null || true; }
in_registry() {
    curl -sf --noproxy '*' --max-time 5 "http://$REGISTRY_ADDR/v2/$DOCKER_REGISTRY_REPO/tags/list" | grep -q '"latest"'
}
push_needed=0
if [[ $(image_sha "$DOCKER_LOCAL_TAG") != "$ROOTFS_SHA" ]]; then
    if in_registry && { [[ $(image_sha "$DOCKER_REGISTRY_TAG") == "$ROOTFS_SHA" ]] \
            || { docker pull -q "$DOCKER_REGISTRY_TAG" >/dev/null 2>&1 \
                 && [[ $(image_sha "$DOCKER_REGISTRY_TAG") == "$ROOTFS_SHA" ]]; }; }; then
        docker tag "$DOCKER_REGISTRY_TAG" "$DOCKER_LOCAL_TAG"
        STARTED+=("tagged $DOCKER_REGISTRY_TAG as $DOCKER_LOCAL_TAG")
    else
        log "importing $ROOTFS_TARBALL as $DOCKER_LOCAL_TAG"
        docker import --change 'CMD ["/bin/sh"]' --change "LABEL org.cman.rootfs-sha256=$ROOTFS_SHA" \
            "$ROOTFS_TARBALL" "$DOCKER_LOCAL_TAG" >/dev/null
        STARTED+=("docker import $DOCKER_LOCAL_TAG")
        push_needed=1
    fi
fi
in_registry || push_needed=1
if (( push_needed )); then
    log "pushing $DOCKER_REGISTRY_TAG"
    docker tag "$DOCKER_LOCAL_TAG" "$DOCKER_REGISTRY_TAG"
    docker push -q "$DOCKER_REGISTRY_TAG" >/dev/null \
        || die_with_log "docker push $DOCKER_REGISTRY_TAG failed" /var/log/cman-registry.log
    STARTED+=("docker push $DOCKER_REGISTRY_TAG")
fi

# --------------------------------------------------------------------------- 7b. OCI test images
# For OCI pulls on LXD and LXC (tests/integration/test_oci_pull.py), all offline:
# - cman/configured:latest  FROM local/busybox with a real config (ENTRYPOINT, CMD, ENV,
#   WORKDIR, USER of a user in the image's /etc/passwd); cman/configured:extra adds one
#   layer on top (the "only new layers" test); library/cmantestbox:latest is the same
#   image under a Docker Hub-style name (the registry-mirror test).
# - cman/debian:bookworm    debootstrap --variant=minbase from the host's configured Debian
#   mirror, cached as a tarball under $IMAGES_DIR (built once), docker import + push.
# Each is pushed only when the registry lacks it, so a second run does nothing.
OCI_TEST_VERSION=1
tag_in_registry() {  # REPO TAG
    curl -sf --noproxy '*' --max-time 5 "http://$REGISTRY_ADDR/v2/$1/tags/list" | grep -q "\"$2\""
}
if ! tag_in_registry cman/configured latest || ! tag_in_registry cman/configured extra \
        || ! tag_in_registry library/cmantestbox latest; then
    ctx=$(mktemp -d /tmp/cman-oci-ctx.XXXXXX)
    printf 'root:x:0:0:root:/root:/bin/sh\ncmanuser:x:1234:2345:cman test user:/srv/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ctx/passwd"
    printf 'root:x:0:\ncmangroup:x:2345:\nnogroup:x:65534:\n' > "$ctx/group"
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $DOCKER_LOCAL_TAG
COPY passwd group /etc/
WORKDIR /srv/app
ENV CMAN_GREETING="hello from the image config" CMAN_SECOND=two
USER cmanuser
LABEL org.cman.oci-test=$OCI_TEST_VERSION
ENTRYPOINT ["/bin/sh", "-c", "echo greeting=\$CMAN_GREETING second=\$CMAN_SECOND; echo cwd=\$(pwd); echo uid=\$(id -u) gid=\$(id -g); echo args=\$*", "cman-entry"]
CMD ["one", "two"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "$REGISTRY_ADDR/cman/configured:latest" "$ctx" >/dev/null 2>&1 \
        || die "docker build of cman/configured failed"
    echo extra > "$ctx/extra.txt"
    printf 'FROM %s\nCOPY extra.txt /srv/app/extra.txt\n' "$REGISTRY_ADDR/cman/configured:latest" > "$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$REGISTRY_ADDR/cman/configured:extra" "$ctx" >/dev/null 2>&1 \
        || die "docker build of cman/configured:extra failed"
    rm -rf "$ctx"
    docker tag "$REGISTRY_ADDR/cman/configured:latest" "$REGISTRY_ADDR/library/cmantestbox:latest"
    for t in cman/configured:latest cman/configured:extra library/cmantestbox:latest; do
        docker push -q "$REGISTRY_ADDR/$t" >/dev/null || die_with_log "docker push $t failed" /var/log/cman-registry.log
    done
    STARTED+=("pushed cman/configured:{latest,extra} library/cmantestbox")
fi
DEBIAN_TARBALL=$IMAGES_DIR/debian-bookworm-minbase.tar.gz
if ! tag_in_registry cman/debian bookworm; then
    if [[ ! -s $DEBIAN_TARBALL ]]; then
        mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' \
            /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1)
        [[ -n $mirror ]] || die "no Debian mirror configured in /etc/apt (needed for debootstrap)"
        log "debootstrap --variant=minbase bookworm from $mirror (once; cached as $DEBIAN_TARBALL)"
        dtmp=$(mktemp -d /tmp/cman-debian.XXXXXX)
        debootstrap --variant=minbase bookworm "$dtmp/rootfs" "$mirror" > /var/log/cman-debootstrap.log 2>&1 \
            || { rm -rf "$dtmp"; die_with_log "debootstrap failed" /var/log/cman-debootstrap.log; }
        rm -f "$dtmp/rootfs/var/cache/apt/archives/"*.deb
        mkdir -p "$IMAGES_DIR"
        tar -C "$dtmp/rootfs" --numeric-owner -czf "$DEBIAN_TARBALL.tmp" .
        mv -f "$DEBIAN_TARBALL.tmp" "$DEBIAN_TARBALL"
        rm -rf "$dtmp"
        STARTED+=("built $DEBIAN_TARBALL")
    fi
    docker import --change 'CMD ["/bin/bash"]' "$DEBIAN_TARBALL" "$REGISTRY_ADDR/cman/debian:bookworm" >/dev/null
    docker push -q "$REGISTRY_ADDR/cman/debian:bookworm" >/dev/null \
        || die_with_log "docker push cman/debian:bookworm failed" /var/log/cman-registry.log
    STARTED+=("pushed cman/debian:bookworm")
fi

# --------------------------------------------------------------------------- 8. summary
pidof_() { local p; p=$(pgrep -xo "$1" 2>/dev/null) && echo "pid $p" || echo "?"; }
elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
{
    echo "== cman engines ready (${elapsed} s) =="
    echo "docker:   server $(docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null), dockerd $(pidof_ dockerd)"
    echo "registry: http://$REGISTRY_ADDR ($(docker-registry --version 2>/dev/null | awk '{print $NF}')), $(pidof_ docker-registry), config $REGISTRY_CONFIG"
    echo "lxd:      $(lxd --version) (client $(lxc --version)), $(pidof_ lxd), bridge $LXD_BRIDGE $LXD_BRIDGE_ADDR"
    echo "lxc:      $(lxc-create --version)"
    echo "rootfs:   $ROOTFS_TARBALL (sha256 ${ROOTFS_SHA:0:12})"
    echo "images:   $DOCKER_LOCAL_TAG, $DOCKER_REGISTRY_TAG, $REGISTRY_ADDR/cman/{configured:latest,configured:extra,debian:bookworm}, $REGISTRY_ADDR/library/cmantestbox"
    echo "egress:   daemons started here use proxy '${CMAN_EGRESS_PROXY:-none}' (blocks outside traffic)"
    if (( ${#STARTED[@]} )); then
        echo "this run: ${STARTED[*]/%/;}"
    else
        echo "this run: nothing to do, everything was already in place"
    fi
}
