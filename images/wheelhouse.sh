#!/usr/bin/env bash
# Makes a wheelhouse on the host for an image build: wheels of SPEC... and all their dependencies, for
# the image's Python (PY_VERSION, e.g. 3.11), so the build installs with `pip install --no-index` and
# needs no network (a build container reaches PyPI only with the host network and the host's CA bundle).
# Usage: images/wheelhouse.sh DEST PY_VERSION SPEC...   (SPEC: a path or a requirement)
# Pure-Python wheels serve any Python 3; wheels built for another CPython are fetched again, as binary
# wheels of the same versions, for PY_VERSION.
set -euo pipefail
dest=$1 py=$2
shift 2
pip=${PIP:-python3 -m pip}
say() { printf '[wheelhouse] %s\n' "$*" >&2; }

mkdir -p "$dest"
# shellcheck disable=SC2086  # $pip is a command line
$pip wheel --quiet --disable-pip-version-check --wheel-dir "$dest" "$@"

host_py=$($pip --version | sed -n 's/.*(python \([0-9]*\.[0-9]*\)).*/\1/p')
if [ "$host_py" != "$py" ]; then
  tag="cp${host_py/./}"
  # abi3 wheels serve every later CPython; only wheels of the host's own ABI must be replaced.
  for whl in "$dest"/*-"$tag"-"$tag"-*.whl; do
    [ -e "$whl" ] || continue
    base=$(basename "$whl")
    name=${base%%-*} version=${base#*-}; version=${version%%-*}
    say "fetching $name==$version for Python $py (the host's Python is $host_py)"
    # shellcheck disable=SC2086
    $pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --dest "$dest" \
      --python-version "$py" --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      "$name==$version"
    rm -f "$whl"
  done
fi
