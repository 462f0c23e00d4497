#!/usr/bin/env bash
# System packages the tests need beyond Python and Go: busybox (the launcher is tested under a busybox
# shell, as in minimal training images). Installed with apt-get where it is missing; idempotent.
set -euo pipefail
missing=()
command -v busybox >/dev/null || missing+=(busybox-static)
command -v dash >/dev/null || missing+=(dash)
if [ ${#missing[@]} -eq 0 ]; then
  echo "[system-deps] busybox and dash present; nothing to do" >&2
  exit 0
fi
command -v apt-get >/dev/null || { echo "[system-deps] ERROR: install ${missing[*]} with your package manager" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "[system-deps] installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
