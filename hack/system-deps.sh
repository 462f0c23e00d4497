#!/usr/bin/env bash
# System packages the tests need beyond Python and Go, from Debian's archive (apt-get; idempotent, quiet):
#   busybox, dash        the launcher is tested under a busybox shell, as in minimal training images
#   docker.io            Docker Engine (dockerd, containerd, runc): builds the project's images with no
#                        container registry, and its containerd/runc run the real test node's pods
#   containernetworking-plugins   the CNI bridge/host-local/firewall/portmap plugins of the real node
#   debootstrap          makes the Debian base image from Debian's packages (hack/debian-base.sh)
#   iptables             kube-proxy and the CNI firewall plugin
#   gcc, libc6-dev       the static pause binary of the node's pod sandboxes
#   openssl, curl        the test PKI, readiness probes
#   socat                forwards the bridge address to the loopback API server and object store
#   nftables             the real node's teardown removes the tables kube-proxy created
# Then starts dockerd when no Docker engine answers (log in $TI_CACHE/dockerd.log) and waits for it.
set -euo pipefail

cache=${TI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ti-operator}
say() { printf '[system-deps] %s\n' "$*" >&2; }
fail() { printf '[system-deps] ERROR: %s\n' "$*" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# package -> a file it installs (checked instead of dpkg's database: a static binary elsewhere also serves)
need=(busybox-static:busybox dash:dash
      docker.io:/usr/sbin/dockerd containerd:/usr/bin/containerd runc:/usr/sbin/runc
      containernetworking-plugins:/usr/lib/cni/bridge debootstrap:/usr/sbin/debootstrap
      iptables:/usr/sbin/iptables gcc:gcc libc6-dev:/usr/include/stdio.h openssl:openssl curl:curl
      iproute2:/usr/sbin/ip socat:socat nftables:/usr/sbin/nft)
missing=()
for entry in "${need[@]}"; do
  pkg=${entry%%:*} file=${entry#*:}
  if [[ $file == /* ]]; then [ -e "$file" ] || missing+=("$pkg"); else command -v "$file" >/dev/null || missing+=("$pkg"); fi
done

if [ ${#missing[@]} -eq 0 ]; then
  say "system packages present; nothing to install"
else
  command -v apt-get >/dev/null || fail "install ${missing[*]} with your package manager"
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Docker CLI that answers first on PATH must talk to the engine started here: Debian's is
# /usr/bin/docker; another CLI (say a static one in /usr/local/bin) works as long as it reaches the
# default socket, which `docker info` below checks.
if docker info >/dev/null 2>&1; then
  say "a Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi
[ -x /usr/sbin/dockerd ] || fail "dockerd is not installed (Debian package docker.io)"
mkdir -p "$cache"
say "starting dockerd (log: $cache/dockerd.log)"
# setsid: the engine outlives this make run, as a system service would.
$sudo setsid /usr/sbin/dockerd >>"$cache/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 1 150); do
  if docker info >/dev/null 2>&1; then
    say "dockerd up ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 0.2
done
tail -20 "$cache/dockerd.log" >&2
fail "dockerd did not answer \`docker info\` within 30 s (log above: $cache/dockerd.log)"
