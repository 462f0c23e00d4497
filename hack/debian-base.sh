#!/usr/bin/env bash
# Makes a Debian bookworm base image with Python from Debian's own packages (debootstrap, then
# `docker import`), for machines where no container registry serves python:*-slim or debian:*.
# The root filesystem tarball is cached in $TI_CACHE/images/; the image is imported once and reused.
# Usage: hack/debian-base.sh [TAG]      (default ti-local/debian-python:bookworm); prints the tag.
set -euo pipefail

tag=${1:-ti-local/debian-python:bookworm}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,ca-certificates
cache=${TI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ti-operator}/images
key="suite=$suite packages=$packages"
tarball="$cache/debian-$suite-rootfs.tar"
say() { printf '[debian-base] %s\n' "$*" >&2; }
fail() { printf '[debian-base] ERROR: %s\n' "$*" >&2; exit 1; }

label=$(docker image inspect -f '{{index .Config.Labels "io.ti.base-key"}}' "$tag" 2>/dev/null || true)
if [ "$label" = "$key" ]; then
  say "$tag present ($key)"
  echo "$tag"
  exit 0
fi

mkdir -p "$cache"
if [ ! -f "$tarball" ] || [ "$(cat "$tarball.key" 2>/dev/null)" != "$key" ]; then
  command -v debootstrap >/dev/null || fail "debootstrap is not installed (hack/system-deps.sh installs it)"
  [ "$(id -u)" -eq 0 ] || fail "debootstrap needs root"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap $suite ($packages) from $mirror (about a minute)"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; fail "debootstrap failed (log: $cache/debootstrap.log)"; }
  # What an image needs no copy of: the package lists and caches (apt can refetch them).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "$key" >"$cache/debian-$suite-rootfs.tar.key"
fi

say "importing $tarball as $tag"
docker import --change "LABEL io.ti.base-key=\"$key\"" --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
  "$tarball" "$tag" >/dev/null
echo "$tag"
