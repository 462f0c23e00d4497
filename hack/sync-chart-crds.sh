#!/usr/bin/env bash
# Copies the generated CRD (crds/, from `make crds`) into the Helm chart's untemplated crds/ folder, so
# `helm install` creates exactly the CRD the repository ships. tests/unit/test_chart.py fails while the
# two files differ. `--check` only compares, and exits 1 with the command to run when they differ.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/crds/tftrainingjobs.training.ti.io.yaml"
dst="$root/charts/ti-operator/crds/tftrainingjobs.training.ti.io.yaml"

[ -f "$src" ] || { echo "sync-chart-crds: $src is missing; run \`make crds\` first" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
  if cmp -s "$src" "$dst"; then
    echo "sync-chart-crds: the chart's CRD is up to date"
    exit 0
  fi
  echo "sync-chart-crds: charts/ti-operator/crds/ differs from crds/; run hack/sync-chart-crds.sh" >&2
  exit 1
fi

mkdir -p "$(dirname "$dst")"
cp "$src" "$dst"
echo "sync-chart-crds: copied crds/$(basename "$src") into charts/ti-operator/crds/"
