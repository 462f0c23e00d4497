#!/usr/bin/env bash
# Builds the ti-operator images with a local Docker engine (`make images` runs it):
#   $REGISTRY/ti-operator:$VERSION                   operator + toolkit (fetch/upload steps), also
#   $REGISTRY/ti-toolkit:$VERSION                    tagged under the catalog's default toolkit name
#   $REGISTRY/tensorflow:<version>-<cpu|gpu>         TI TensorFlow framework images
# Environment:
#   REGISTRY     image prefix (default ghcr.io/ti-operator); push the result there yourself
#   VERSION      operator image tag (default: the version in pyproject.toml)
#   TF_VERSIONS  framework versions to build (default "1.14.0 2.0.0 2.16.1", the catalog's presets)
#   TF_VARIANTS  "cpu gpu" (default) or just "cpu" (the GPU bases are several GB each)
#   ONLY         "operator" or "tensorflow" to build one kind only
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
export DOCKER_BUILDKIT=1

if [ -z "$ONLY" ] || [ "$ONLY" = operator ]; then
  echo "images: building $REGISTRY/ti-operator:$VERSION (also tagged $REGISTRY/ti-toolkit:$VERSION)"
  docker build -f images/operator/Dockerfile --build-arg "VERSION=$VERSION" \
    -t "$REGISTRY/ti-operator:$VERSION" -t "$REGISTRY/ti-toolkit:$VERSION" .
fi

if [ -z "$ONLY" ] || [ "$ONLY" = tensorflow ]; then
  for version in $TF_VERSIONS; do
    # TensorFlow's own tags carry "-py3" up to 2.1 and nothing after.
    case "$version" in 1.*|2.0.*|2.1.*) suffix=-py3 ;; *) suffix= ;; esac
    for variant in $TF_VARIANTS; do
      case "$variant" in cpu) tf_variant= ;; gpu) tf_variant=-gpu ;; *) echo "images: unknown variant $variant (cpu or gpu)" >&2; exit 1 ;; esac
      tag="$REGISTRY/tensorflow:$version-$variant"
      echo "images: building $tag from tensorflow/tensorflow:$version$tf_variant$suffix"
      docker build images/tensorflow \
        --build-arg "TF_VERSION=$version" --build-arg "TF_VARIANT=$tf_variant" --build-arg "TF_PY_SUFFIX=$suffix" \
        -t "$tag"
    done
  done
fi
