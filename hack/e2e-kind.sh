#!/usr/bin/env bash
# End to end on a real cluster (`make e2e-kind`): everything a platform engineer and a data scientist do,
# on kind (Kubernetes in Docker), with real images, a real kubelet and real TensorFlow.
#
#   1. preflight: docker with a running engine, kind, kubectl, helm, the .venv (fails fast, saying what is missing)
#   2. a kind cluster ($KIND_CLUSTER, default ti-e2e; reused if it exists)
#   3. images: the operator/toolkit image, the TI TensorFlow 2.16 CPU image and an S3/COS test server
#      (tests/support/objectstore.py, the server of the integration tier), built and loaded into kind
#   4. the object store in the cluster, a bucket, the examples' data (examples/make_data.py) and the
#      source of examples/keras-single uploaded, the COS credentials Secret
#   5. the chart, in namespaced mode (the least-privilege one) watching the jobs' namespace, with the
#      in-cluster endpoint, the TI TensorFlow image for 2.16, and instance types sized for a laptop
#   6. examples/keras-single.yaml applied with kubectl; examples/keras-two-workers.yaml too (two pods,
#      TF_CONFIG, MultiWorkerMirroredStrategy); then the TI SDK example (TensorFlow(...).fit(...))
#   7. checks: every job Completed, status.modelArtifacts set, and each model.tar.gz in the bucket holds
#      a SavedModel
#
# Environment: KIND_CLUSTER (ti-e2e), KEEP_CLUSTER=1 (keep it afterwards; default: deleted on success,
# kept on failure for a look), E2E_TIMEOUT (seconds per job, 900), KIND_VERSION (v0.29.0, for `go install`
# when kind is not on PATH).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

CLUSTER=${KIND_CLUSTER:-ti-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
TIMEOUT=${E2E_TIMEOUT:-900}
KIND_VERSION=${KIND_VERSION:-v0.29.0}
REGISTRY=ti-e2e.local
TAG=e2e
TF_VERSION=2.16.1
JOB_NS=ti-e2e
OP_NS=ti-system
BUCKET=ti-e2e-1250000000
STORE_PORT=9000
pf_pid=""
ok=0

say() { printf '\n[e2e-kind] %s\n' "$*" >&2; }
die() { printf '[e2e-kind] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- 1. preflight: fail fast, before building anything ----------------------------------------------
command -v docker >/dev/null 2>&1 ||
  die "docker is not installed. make e2e-kind runs Kubernetes nodes as Docker containers (kind) and needs a Docker engine; this machine has none. Everything it checks that can run without Docker runs in \`make test\`."
docker info >/dev/null 2>&1 ||
  die "docker cannot reach a Docker engine (\`docker info\` failed). Start the engine (or set DOCKER_HOST), then run make e2e-kind again."
work=$(mktemp -d "${TMPDIR:-/tmp}/ti-e2e.XXXXXX")

toolbin=${TI_TOOLCHAIN_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ti-operator/toolchain/bin}
find_tool() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; elif [ -x "$toolbin/$1" ]; then echo "$toolbin/$1"; else return 1; fi
}
KUBECTL=$(find_tool kubectl) || die "kubectl not found on PATH or in $toolbin: run \`make toolchain\`"
HELM=$(find_tool helm) || die "helm not found on PATH or in $toolbin: run \`make toolchain\`"
if ! KIND=$(find_tool kind); then
  command -v go >/dev/null 2>&1 || die "kind is not installed and Go is missing to build it: install kind ($KIND_VERSION)"
  say "installing kind $KIND_VERSION with go install"
  GOBIN="$work/bin" go install "sigs.k8s.io/kind@$KIND_VERSION" || die "go install sigs.k8s.io/kind@$KIND_VERSION failed"
  KIND="$work/bin/kind"
fi
[ -x .venv/bin/python ] || make setup
PY=.venv/bin/python

# ---- cleanup: on failure say what happened and keep the cluster; on success delete it -----------------
cleanup() {
  [ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    say "FAILED; what the cluster says (KUBECONFIG=$work/kubeconfig, kept until you run: $KIND delete cluster --name $CLUSTER)"
    "$KUBECTL" get tftj,pods,svc -A -o wide 2>/dev/null || true
    "$KUBECTL" -n "$JOB_NS" describe tftj 2>/dev/null | tail -60 || true
    "$KUBECTL" -n "$OP_NS" logs deployment/ti-operator --tail=80 2>/dev/null || true
    for pod in $("$KUBECTL" -n "$JOB_NS" get pods -o name 2>/dev/null); do
      "$KUBECTL" -n "$JOB_NS" logs "$pod" --all-containers --prefix --tail=40 2>/dev/null || true
    done
  elif [ "$KEEP_CLUSTER" = 1 ]; then
    say "kept cluster $CLUSTER (KUBECONFIG=$work/kubeconfig)"
  else
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# ---- 2. cluster --------------------------------------------------------------------------------------
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  "$KIND" create cluster --name "$CLUSTER" --wait 180s
fi
export KUBECONFIG="$work/kubeconfig"
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
kubectl() { "$KUBECTL" "$@"; }

# ---- 3. images -------------------------------------------------------------------------------------------
say "building images"
REGISTRY=$REGISTRY VERSION=$TAG ONLY=operator bash images/build.sh
REGISTRY=$REGISTRY TF_VERSIONS=$TF_VERSION TF_VARIANTS=cpu ONLY=tensorflow bash images/build.sh
docker build -t "$REGISTRY/objectstore:$TAG" -f - . <<'DOCKERFILE'
FROM python:3.12-slim
RUN pip install --no-cache-dir "moto[s3,server]>=5" "werkzeug>=3" "pytest>=8" "cos-python-sdk-v5>=1.9.30"
WORKDIR /srv
COPY tests/__init__.py tests/__init__.py
COPY tests/support/__init__.py tests/support/objectstore.py tests/support/
USER 65532:65532
CMD ["python", "-c", "from tests.support.objectstore import LoopbackObjectStore as S; S(host='0.0.0.0', port=9000).serve_forever()"]
DOCKERFILE
for image in "$REGISTRY/ti-operator:$TAG" "$REGISTRY/tensorflow:$TF_VERSION-cpu" "$REGISTRY/objectstore:$TAG"; do
  say "loading $image into kind"
  "$KIND" load docker-image --name "$CLUSTER" "$image"
done

# ---- 4. object store, bucket, data, sources, credentials --------------------------------------------------
kubectl create namespace "$JOB_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$JOB_NS" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: objectstore}
spec:
  replicas: 1
  selector: {matchLabels: {app: objectstore}}
  template:
    metadata: {labels: {app: objectstore}}
    spec:
      containers:
        - name: s3
          image: $REGISTRY/objectstore:$TAG
          imagePullPolicy: Never
          ports: [{containerPort: $STORE_PORT}]
          readinessProbe: {tcpSocket: {port: $STORE_PORT}}
---
apiVersion: v1
kind: Service
metadata: {name: objectstore}
spec:
  selector: {app: objectstore}
  ports: [{port: $STORE_PORT, targetPort: $STORE_PORT}]
YAML
kubectl -n "$JOB_NS" rollout status deployment/objectstore --timeout=180s
# An IP endpoint is reached directly with the bucket in the Host header (ti.storage.settings); a DNS
# name would become <bucket>.<name>, which cluster DNS does not resolve.
store_ip=$(kubectl -n "$JOB_NS" get service objectstore -o jsonpath='{.spec.clusterIP}')
local_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl -n "$JOB_NS" port-forward service/objectstore "$local_port:$STORE_PORT" >"$work/port-forward.log" 2>&1 &
pf_pid=$!
eval "$("$PY" -c 'from tests.support import objectstore as o; print(f"SECRET_ID={o.SECRET_ID} SECRET_KEY={o.SECRET_KEY} REGION={o.REGION}")')"
export TENCENTCLOUD_SECRETID=$SECRET_ID TENCENTCLOUD_SECRETKEY=$SECRET_KEY TENCENTCLOUD_REGION=$REGION
export TI_COS_ENDPOINT="http://127.0.0.1:$local_port"
kubectl -n "$JOB_NS" create secret generic ti-cos-credentials \
  --from-literal=TENCENTCLOUD_SECRETID="$SECRET_ID" --from-literal=TENCENTCLOUD_SECRETKEY="$SECRET_KEY" \
  --dry-run=client -o yaml | kubectl apply -f -

say "seeding bucket $BUCKET: data and the source of examples/keras-single"
"$PY" examples/make_data.py "$work/data"
"$PY" - "$BUCKET" "$work" "$local_port" <<'PY'
import os
import sys
import time
from pathlib import Path

from qcloud_cos import CosConfig, CosS3Client

from ti import sourcedir

bucket, work, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
client = CosS3Client(CosConfig(Region=os.environ["TENCENTCLOUD_REGION"], SecretId=os.environ["TENCENTCLOUD_SECRETID"],
                               SecretKey=os.environ["TENCENTCLOUD_SECRETKEY"], Scheme="http", IP="127.0.0.1", Port=port))
for attempt in range(60):  # the port-forward takes a moment
    try:
        client.create_bucket(Bucket=bucket)
        break
    except Exception as err:
        if "BucketAlreadyOwnedByYou" in str(err) or "BucketAlreadyExists" in str(err):
            break
        time.sleep(1)
else:
    sys.exit(f"cannot create bucket {bucket} through the port-forward")
for path in sorted((work / "data").rglob("*.npz")):
    client.upload_file(Bucket=bucket, Key=f"ti-examples/data/{path.relative_to(work / 'data')}", LocalFilePath=str(path))
for example in ("keras-single", "keras-two-workers"):
    archive = sourcedir.pack(Path("examples") / example, work / f"{example}.tar.gz")
    client.upload_file(Bucket=bucket, Key=f"ti-examples/{example}/source/sourcedir.tar.gz", LocalFilePath=str(archive))
print("seeded", bucket)
PY

# ---- 5. the chart -------------------------------------------------------------------------------------------
say "installing the chart (namespaced mode, watching $JOB_NS)"
cat >"$work/values.yaml" <<YAML
image: {repository: $REGISTRY/ti-operator, tag: $TAG, pullPolicy: Never}
rbac: {scope: namespaced}
watchNamespaces: [$JOB_NS]
config:
  imagePullPolicy: IfNotPresent
  cos: {region: $REGION, endpoint: "http://$store_ip:$STORE_PORT"}
  frameworks:
    "2.16": {cpu: "$REGISTRY/tensorflow:$TF_VERSION-cpu", gpu: "tensorflow/tensorflow:$TF_VERSION-gpu"}
  # The examples' types, sized for a kind node on a laptop.
  instanceTypes:
    TI.S.MEDIUM.POST: {description: e2e, cpu: 1, memory: 2Gi}
    TI.S.LARGE.POST: {description: e2e, cpu: 1, memory: 2Gi}
YAML
"$HELM" upgrade --install ti-operator charts/ti-operator --namespace "$OP_NS" --create-namespace \
  --values "$work/values.yaml" --wait --timeout 5m
kubectl -n "$OP_NS" rollout status deployment/ti-operator --timeout=180s

wait_completed() { # job name
  local job=$1 deadline=$((SECONDS + TIMEOUT)) phase=""
  while [ $SECONDS -lt $deadline ]; do
    phase=$(kubectl -n "$JOB_NS" get tftj "$job" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case "$phase" in
      Completed) say "$job: Completed ($(kubectl -n "$JOB_NS" get tftj "$job" -o jsonpath='{.status.modelArtifacts}'))"; return 0 ;;
      Failed | Stopped) die "$job ended $phase: $(kubectl -n "$JOB_NS" get tftj "$job" -o jsonpath='{.status.failureReason}')" ;;
    esac
    sleep 5
  done
  die "$job not Completed after ${TIMEOUT}s (phase ${phase:-none})"
}

# ---- 6. the example manifests, then the SDK example ------------------------------------------------------------
for example in keras-single keras-two-workers; do
  say "kubectl apply -f examples/$example.yaml"
  sed "s#my-bucket-1250000000#$BUCKET#g" "examples/$example.yaml" | kubectl -n "$JOB_NS" apply -f -
  wait_completed "$example"
done

say "the TI SDK example: TensorFlow(...).fit({'train': ..., 'test': ...})"
KUBECONFIG=$KUBECONFIG "$PY" - "$BUCKET" "$JOB_NS" <<'PY'
import sys
from ti.session import Session
from ti.tensorflow import TensorFlow

bucket, namespace = sys.argv[1], sys.argv[2]
estimator = TensorFlow(
    role="default",
    train_instance_count=1,
    train_instance_type="TI.S.MEDIUM.POST",
    py_version="py3",
    script_mode=True,
    framework_version="2.16",
    entry_point="train.py",
    source_dir="examples/keras-single",
    output_path=f"cos://{bucket}/ti-examples/sdk-output",
    hyperparameters={"epochs": 3, "batch_size": 64},
    session=Session(namespace=namespace),
)
estimator.fit(
    {"train": f"cos://{bucket}/ti-examples/data/train", "test": f"cos://{bucket}/ti-examples/data/test"},
    job_name="sdk-keras-single",
)
print("model:", estimator.model_data)
PY
wait_completed sdk-keras-single

# ---- 7. the models are in the bucket -----------------------------------------------------------------------------
say "checking the models in the bucket"
"$PY" - "$BUCKET" "$local_port" "$JOB_NS" "$KUBECTL" <<'PY'
import io
import json
import os
import subprocess
import sys
import tarfile

from qcloud_cos import CosConfig, CosS3Client

bucket, port, namespace, kubectl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
client = CosS3Client(CosConfig(Region=os.environ["TENCENTCLOUD_REGION"], SecretId=os.environ["TENCENTCLOUD_SECRETID"],
                               SecretKey=os.environ["TENCENTCLOUD_SECRETKEY"], Scheme="http", IP="127.0.0.1", Port=port))
for job in ("keras-single", "keras-two-workers", "sdk-keras-single"):
    status = json.loads(subprocess.check_output([kubectl, "-n", namespace, "get", "tftj", job, "-o", "json"]))["status"]
    uri = status["modelArtifacts"]
    assert uri.startswith(f"cos://{bucket}/") and uri.endswith(f"/{job}/output/model.tar.gz"), uri
    body = client.get_object(Bucket=bucket, Key=uri.split("/", 3)[3])["Body"].get_raw_stream().read()
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert any(n.endswith("saved_model.pb") for n in names), f"{uri} holds no SavedModel: {names}"
    print(f"{job}: {uri} ({len(body)} bytes, {len(names)} files)")
PY
ok=1
say "PASSED: two manifests and the SDK example trained on kind; models in s3://$BUCKET"
