#!/bin/sh
# What `make test-image` needs before the test runs: a Docker engine, and the base image the
# Dockerfile names (python:3.11-slim). No registry of images is reachable from here, so the base
# is a stand-in made once and kept: Debian bookworm (debootstrap, minbase) with Python 3.11, pip
# and venv from Debian, the EXTERNALLY-MANAGED marker removed as in the official image, and this
# host's extra CA certificates trusted (HTTPS to the package registries may pass a proxy that
# presents them). Exits 0 when the engine answers and the base exists; otherwise 77 with the
# reason on its last line (the test is then skipped with that reason).
set -u

say() { printf '%s\n' "$*" >&2; }
skip() { say "$*"; exit 77; }
have() { command -v "$1" >/dev/null 2>&1; }

state="${HIVE_AGENT_IMAGE_STATE:-var/image-test}"
mkdir -p "$state"

if ! have dockerd || ! have debootstrap; then
    if [ "$(id -u)" != 0 ] || ! have apt-get; then
        skip "no Docker engine or debootstrap, and no root to install Debian's docker.io and debootstrap"
    fi
    say "installing Debian's docker.io and debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >"$state/apt.log" 2>&1 \
        || skip "apt-get install docker.io debootstrap failed (see $state/apt.log)"
fi

if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || skip "no Docker engine answers, and starting one needs root"
    say "starting dockerd (its log: $state/dockerd.log)"
    # No bridge and no iptables: builds and containers use the host's network (--network=host).
    nohup dockerd --storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none \
        >"$state/dockerd.log" 2>&1 &
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 60 ] || skip "dockerd did not answer within 30 s (see $state/dockerd.log)"
        sleep 0.5
    done
fi

if docker image inspect python:3.11-slim >/dev/null 2>&1; then
    exit 0
fi
say "making the stand-in for python:3.11-slim with debootstrap (once; it is kept)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$state/debootstrap.log" 2>&1 \
    || skip "debootstrap failed (see $state/debootstrap.log)"
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" update-ca-certificates >/dev/null 2>&1 || skip "update-ca-certificates failed in the stand-in"
# pip takes the system's store (with those certificates), not its own bundle.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' - python:3.11-slim >/dev/null \
    || skip "docker import of the stand-in failed"
say "python:3.11-slim stand-in made"
