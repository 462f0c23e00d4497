#!/usr/bin/env bash
# Builds the ti-operator images with a local Docker engine (`make images` runs it):
#   $REGISTRY/ti-operator:$VERSION                   operator + toolkit (fetch/upload steps), also
#   $REGISTRY/ti-toolkit:$VERSION                    tagged under the catalog's default toolkit name
#   $REGISTRY/tensorflow:<version>-<cpu|gpu>         TI TensorFlow framework images
# No container registry is needed: Python packages come from a wheelhouse made on the host
# (images/wheelhouse.sh), and where the upstream base cannot be pulled a Debian base made from Debian's
# packages serves (hack/debian-base.sh). The legacy builder builds every Dockerfile (no BuildKit, no
# frontend image to pull). An image whose inputs did not change is not rebuilt (io.ti.build-hash label).
# Environment:
#   REGISTRY        image prefix (default ghcr.io/ti-operator); push the result there yourself
#   VERSION         operator image tag (default: the version in pyproject.toml)
#   TF_VERSIONS     framework versions to build (default "1.14.0 2.0.0 2.16.1", the catalog's presets)
#   TF_VARIANTS     "cpu gpu" (default) or just "cpu" (the GPU bases are several GB each)
#   ONLY            "operator" or "tensorflow" to build one kind only
#   BASE            auto (default): the upstream base when it is here or can be pulled, else the Debian
#                   base; upstream: always; debian: always the Debian base (Python 3.11)
#   PYTHON_VERSION  Python of the operator image's upstream base python:<v>-slim (default 3.12)
#   TF_SOURCE       auto (default): the upstream tensorflow/tensorflow image when it is here or can be
#                   pulled, else (2.x cpu) tensorflow-cpu from PyPI on a plain Python base; upstream; pypi
#   PIP             the host's pip for the wheelhouse (default: .venv/bin/pip, else python3 -m pip)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v docker >/dev/null 2>&1; then
  echo "images: docker is not installed; building images needs a Docker engine (this machine has none)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: docker cannot reach a Docker engine (\`docker info\` failed); start one, or build on a machine that has one" >&2
  exit 1
fi

REGISTRY=${REGISTRY:-ghcr.io/ti-operator}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
TF_VERSIONS=${TF_VERSIONS:-1.14.0 2.0.0 2.16.1}
TF_VARIANTS=${TF_VARIANTS:-cpu gpu}
ONLY=${ONLY:-}
BASE=${BASE:-auto}
TF_SOURCE=${TF_SOURCE:-auto}
py_asked=${PYTHON_VERSION:-}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
if [ -z "${PIP:-}" ]; then
  if [ -x "$root/.venv/bin/pip" ]; then PIP="$root/.venv/bin/pip"; else PIP="python3 -m pip"; fi
fi
export PIP
export DOCKER_BUILDKIT=0
cache=${TI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ti-operator}/images
mkdir -p "$cache"
skipped=()

say() { printf 'images: %s\n' "$*" >&2; }
fail() { printf 'images: ERROR: %s\n' "$*" >&2; exit 1; }
# Present here, or pulled now; a registry that cannot be reached fails in well under a second.
available() { docker image inspect "$1" >/dev/null 2>&1 || docker pull --quiet "$1" >/dev/null 2>&1; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
python_of() { docker run --rm --entrypoint python3 "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
# sha256 of the given files and folders (names and contents) plus extra words.
content_hash() {
  local words=$1
  shift
  { echo "$words"; find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; } |
    sha256sum | cut -c1-32
}
up_to_date() { [ "$(docker image inspect -f '{{index .Config.Labels "io.ti.build-hash"}}' "$1" 2>/dev/null)" = "$2" ]; }

# The base of the Python images (operator; TensorFlow from PyPI): sets $base and $py.
pick_python_base() {
  local upstream="python:$1-slim"
  if [ "$BASE" = upstream ] || { [ "$BASE" = auto ] && available "$upstream"; }; then
    available "$upstream" || fail "cannot pull $upstream (no registry?); BASE=debian builds on a Debian base instead"
    base=$upstream
  else
    base=$(bash "$root/hack/debian-base.sh")
  fi
  py=$(python_of "$base")
  if [ -n "$py_asked" ] && [ "$py" != "$py_asked" ]; then
    fail "PYTHON_VERSION=$py_asked, but the base $base has Python $py (Debian bookworm's is 3.11)"
  fi
}

if [ -z "$ONLY" ] || [ "$ONLY" = operator ]; then
  pick_python_base "$PYTHON_VERSION"
  tag="$REGISTRY/ti-operator:$VERSION"
  hash=$(content_hash "base=$(image_id "$base") py=$py version=$VERSION" images/operator/Dockerfile pyproject.toml \
    README.md src operator)
  if up_to_date "$tag" "$hash"; then
    say "$tag up to date (base $base, Python $py)"
  else
    say "building $tag on $base (Python $py), also tagged $REGISTRY/ti-toolkit:$VERSION"
    ctx="$cache/ctx-operator"
    rm -rf "$ctx" && mkdir -p "$ctx/operator"
    cp -r pyproject.toml README.md src "$ctx/"
    cp operator/handlers.py "$ctx/operator/"
    find "$ctx/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
    bash images/wheelhouse.sh "$ctx/.wheelhouse/deps" "$py" "$ctx"
    mkdir -p "$ctx/.wheelhouse/project"
    mv "$ctx"/.wheelhouse/deps/ti_operator-*.whl "$ctx/.wheelhouse/project/"
    docker build --quiet -f images/operator/Dockerfile --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$VERSION" \
      --label "io.ti.build-hash=$hash" -t "$tag" "$ctx" >/dev/null
    rm -rf "$ctx"
    # The image this one replaced is left untagged: drop it (the install stage's layers stay as cache).
    docker image prune --force --filter "label=org.opencontainers.image.title=ti-operator" >/dev/null
  fi
  docker tag "$tag" "$REGISTRY/ti-toolkit:$VERSION"
fi

build_tf_pypi() {  # version tag
  local version=$1 tag=$2
  pick_python_base 3.11
  local wheels="$cache/wheels-tensorflow-cpu-$version-py$py"
  if [ ! -f "$wheels/.complete" ]; then
    say "wheelhouse for tensorflow-cpu==$version, Python $py (first time: a few hundred MB from PyPI)"
    rm -rf "$wheels"
    bash images/wheelhouse.sh "$wheels/wheelhouse" "$py" "tensorflow-cpu==$version"
    touch "$wheels/.complete"
  fi
  local hash
  hash=$(content_hash "base=$(image_id "$base") py=$py tf=$version" images/tensorflow-pypi/Dockerfile "$wheels/wheelhouse")
  if up_to_date "$tag" "$hash"; then
    say "$tag up to date (tensorflow-cpu $version from PyPI on $base)"
    return
  fi
  say "building $tag: tensorflow-cpu $version from the wheelhouse on $base (Python $py)"
  docker build --quiet -f images/tensorflow-pypi/Dockerfile --build-arg "BASE_IMAGE=$base" \
    --build-arg "TF_VERSION=$version" --label "io.ti.build-hash=$hash" -t "$tag" "$wheels" >/dev/null
}

if [ -z "$ONLY" ] || [ "$ONLY" = tensorflow ]; then
  for version in $TF_VERSIONS; do
    # TensorFlow's own tags carry "-py3" up to 2.1 and nothing after.
    case "$version" in 1.*|2.0.*|2.1.*) suffix=-py3 ;; *) suffix= ;; esac
    for variant in $TF_VARIANTS; do
      case "$variant" in cpu) tf_variant= ;; gpu) tf_variant=-gpu ;; *) fail "unknown variant $variant (cpu or gpu)" ;; esac
      tag="$REGISTRY/tensorflow:$version-$variant"
      upstream="tensorflow/tensorflow:$version$tf_variant$suffix"
      pypi_ok=false
      [[ $variant == cpu && $version == 2.* && $suffix == "" ]] && pypi_ok=true
      if [ "$TF_SOURCE" = pypi ] || { [ "$TF_SOURCE" = auto ] && $pypi_ok && ! available "$upstream"; }; then
        $pypi_ok || fail "TF_SOURCE=pypi builds TensorFlow >= 2.2 cpu images only, not $tag"
        build_tf_pypi "$version" "$tag"
      elif available "$upstream"; then
        hash=$(content_hash "base=$(image_id "$upstream")" images/tensorflow/Dockerfile)
        if up_to_date "$tag" "$hash"; then say "$tag up to date (from $upstream)"; continue; fi
        say "building $tag from $upstream"
        docker build --quiet images/tensorflow --build-arg "BASE_IMAGE=$upstream" \
          --build-arg "TF_VERSION=$version" --build-arg "TF_VARIANT=$tf_variant" --build-arg "TF_PY_SUFFIX=$suffix" \
          --label "io.ti.build-hash=$hash" -t "$tag" >/dev/null
      elif [ "$TF_SOURCE" = upstream ]; then
        fail "cannot pull $upstream (no registry?) for $tag"
      else
        skipped+=("$tag (its base $upstream cannot be pulled here and TensorFlow $version $variant has no PyPI build)")
      fi
    done
  done
fi

for s in "${skipped[@]}"; do say "not built: $s"; done
say "done"
