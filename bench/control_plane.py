#!/usr/bin/env python3
"""Control-plane benchmark: ti-operator against Kubernetes' Job controller and Kubeflow's training-operator.

One real control plane (the test fixture's etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok, on loopback), with kwok Stages that run every pod for --run-seconds and then end it with exit
code 0. Each system runs the same workload in a namespace of its own, one system at a time, on the same
API server:

  ours        TFTrainingJobs, `kopf run operator/handlers.py` (a process of its own, its own token);
  job         Indexed batch/v1 Jobs (completions = parallelism = instances), kube-controller-manager's
              Job controller (restarted before its runs so its memory and CPU are its run's);
  kubeflow    TFJobs (Worker replicas = instances), Kubeflow's training-operator v1, built from its Go
              module at TRAINING_OPERATOR_VERSION (its webhook needs certificates: see
              start_training_operator).

Every pod has the same spec: the pod ti-operator renders for the job (init container, training and
upload containers), so the scheduler's and kwok's work is the same for all.

Measured per job: create -> all its pods created, and all its pods finished -> the job's status terminal
(times are when this process's watches saw each change); API requests per job by verb, both from the
API server's apiserver_request_total (every client: controller, scheduler, kwok, this script) and from
its audit log (the controller's own identity only); the controller's peak RSS (VmHWM) and CPU seconds.
Ours alone: RSS with many jobs known (--rss-jobs), and what pods without our label cost it in a
namespace it watches (--unrelated-pods: extra RSS and CPU-seconds).

Client rate limits: kube-controller-manager defaults to 20 QPS / 30 burst and controller-runtime (the
training-operator, which has no flag for it) uses 20 / 30. "equal" runs ours at TI_OPERATOR_QPS=20,
TI_OPERATOR_BURST=30; "default" runs ours unlimited (its default). The peers' defaults are the equal
setting, so they run once.

  .venv/bin/python bench/control_plane.py                  # full sizes: 200x2, 20x16, RSS with 1000 and
                                                           # 5000 jobs, 5000 unrelated pods
  .venv/bin/python bench/control_plane.py --size small     # 50x2, 5x16, RSS with 250 jobs, 500 unrelated
  .venv/bin/python bench/control_plane.py --workloads 200x2 --systems ours,job --rates equal

Results: printed as tables with ratios, and written as JSON (--out, default bench/results.json).
Needs the toolchain (make toolchain), Go (for the training-operator) and TI_TOOLCHAIN_BIN or the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.support import kwok_stages as ks  # noqa: E402
from tests.support.controlplane import (  # noqa: E402
    ControlPlane,
    free_port,
    kwok_node,
    running_control_plane,
)
from tests.support.pki import write_serving  # noqa: E402
from ti.api import TFTrainingJob  # noqa: E402
from ti.catalog import load_catalog  # noqa: E402
from ti.operator.render import render  # noqa: E402
from ti.operator.settings import OperatorConfig  # noqa: E402

TRAINING_OPERATOR_MODULE = "github.com/kubeflow/training-operator"
TRAINING_OPERATOR_VERSION = "v1.8.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ti-operator" / "peers"
TRAINING_OPERATOR_BIN = CACHE / "bin" / f"training-operator-{TRAINING_OPERATOR_VERSION}"
# The training-operator's cert rotator expects its webhook certificates here (a mounted Secret in a pod).
WEBHOOK_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")

BUCKET = "cos://models-1250000000"
SYSTEM_NS = "bench-system"
RSS_NS = "bench-rss"
RSS_NAMESPACES = tuple(f"{RSS_NS}-{i}" for i in range(4))  # one per --rss-jobs size; their pods never end
UNRELATED_NS = "bench-unrelated"
EQUAL_QPS, EQUAL_BURST = 20, 30
JOB_CONTROLLER_USER = "system:serviceaccount:kube-system:job-controller"
OURS_USER = f"system:serviceaccount:{SYSTEM_NS}:ti-operator"
KUBEFLOW_USER = f"system:serviceaccount:{SYSTEM_NS}:training-operator"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
KOPF = Path(sys.executable).parent / "kopf"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ---- the training-operator ------------------------------------------------------------------------


def ensure_training_operator(notes: list[str]) -> Path | None:
    """Build the pinned training-operator from its Go module (once, into the cache); None if it fails,
    with what was tried in `notes`."""
    if TRAINING_OPERATOR_BIN.exists():
        return TRAINING_OPERATOR_BIN
    go = shutil.which("go")
    if go is None:
        notes.append("training-operator: no `go` on PATH, so it could not be built")
        return None
    TRAINING_OPERATOR_BIN.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    spec = f"{TRAINING_OPERATOR_MODULE}@{TRAINING_OPERATOR_VERSION}"
    got = subprocess.run([go, "mod", "download", "-json", spec], capture_output=True, text=True, env=env)
    if got.returncode != 0:
        notes.append(f"training-operator: `go mod download {spec}` failed: {got.stderr[-800:]}")
        return None
    source = Path(json.loads(got.stdout)["Dir"])
    log(f"building the training-operator {TRAINING_OPERATOR_VERSION} from {source} (a few minutes)")
    built = subprocess.run(
        [go, "build", "-o", str(TRAINING_OPERATOR_BIN), "./cmd/training-operator.v1"],
        cwd=source,
        capture_output=True,
        text=True,
        env=env,
    )
    if built.returncode != 0:
        notes.append(
            f"training-operator: `go build ./cmd/training-operator.v1` in {source} failed: {built.stderr[-1500:]}"
        )
        return None
    return TRAINING_OPERATOR_BIN


def training_operator_crds() -> list[Path]:
    got = subprocess.run(
        ["go", "mod", "download", "-json", f"{TRAINING_OPERATOR_MODULE}@{TRAINING_OPERATOR_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Path(json.loads(got.stdout)["Dir"]) / "manifests" / "base" / "crds" / "kubeflow.org_tfjobs.yaml"]


def write_webhook_certs() -> None:
    """A serving certificate for the training-operator's webhook server. Out of a cluster nothing mounts
    its Secret, and its cert rotator waits for these files; the API server never calls the webhook (no
    ValidatingWebhookConfiguration is registered), so TFJobs are checked by the CRD schema only."""
    write_serving(
        WEBHOOK_CERT_DIR, "ti-bench-ca", "training-operator.kubeflow.svc", ["training-operator.kubeflow.svc"]
    )


# ---- the plane ------------------------------------------------------------------------------------

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "users": [OURS_USER, JOB_CONTROLLER_USER, KUBEFLOW_USER]},
        {"level": "None"},
    ],
}


def nodes(count: int) -> list[dict[str, Any]]:
    capacity = {"cpu": "100000", "memory": "1000Ti", "pods": "5000"}
    return [kwok_node(f"kwok-bench-{i}", capacity) for i in range(count)]


@contextlib.contextmanager
def bench_plane(work: Path, run_seconds: float) -> Iterator[ControlPlane]:
    stages = ks.pod_stages(
        ks.end_stage(
            "bench-pods-finish",
            [ks.expr(".metadata.namespace", "NotIn", *RSS_NAMESPACES, "kube-system", SYSTEM_NS)],
            after_ms=int(run_seconds * 1000),
        )
    )
    config = ks.write_config(work / "kwok-stages.yaml", stages)
    policy = work / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    extra = {
        "kube-apiserver": [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={work / 'audit.log'}",
            "--audit-log-format=json",
        ],
        # The fixture raises these to 200/400 for the tests; the benchmark uses the defaults.
        "kube-controller-manager": [f"--kube-api-qps={EQUAL_QPS}", f"--kube-api-burst={EQUAL_BURST}"],
    }
    with running_control_plane(kwok_config=config, extra_args=extra) as plane:
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes(16)))
        yield plane


def token_kubeconfig(plane: ControlPlane, account: str, work: Path) -> Path:
    plane.kubectl("create", "serviceaccount", account, "-n", SYSTEM_NS)
    plane.kubectl(
        "create", "clusterrolebinding", f"bench-{account}", "--clusterrole=cluster-admin",
        f"--serviceaccount={SYSTEM_NS}:{account}",
    )  # fmt: skip
    token = plane.kubectl("create", "token", account, "-n", SYSTEM_NS, "--duration=12h").stdout.strip()
    return plane.kubeconfig_for_token(token, work / f"{account}.kubeconfig")


def wait_for(check: Callable[[], Any], what: str, timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            got = check()
            if got:
                return got
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout}s")


def new_namespace(plane: ControlPlane, core: client.CoreV1Api, name: str) -> None:
    plane.kubectl("create", "namespace", name)
    wait_for(
        lambda: core.read_namespaced_service_account("default", name), f"ServiceAccount default in {name}", 60
    )


# ---- the systems ----------------------------------------------------------------------------------


def ours_manifest(name: str, instances: int) -> dict[str, Any]:
    return {
        "apiVersion": "training.ti.io/v1alpha1",
        "kind": "TFTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "role": "default",
            "instanceType": "TI.S.MEDIUM.POST",
            "instanceCount": instances,
            "frameworkVersion": "2.0.0",
            "entryPoint": "train.py",
            "sourceDir": f"{BUCKET}/src/sourcedir.tar.gz",
            "outputPath": f"{BUCKET}/out",
        },
    }


def pod_spec(namespace: str, instances: int) -> dict[str, Any]:
    """The pod spec ti-operator renders for the same job, for the peers' templates."""
    body = ours_manifest("peer", instances)
    body["metadata"]["namespace"] = namespace
    pod = render(TFTrainingJob.from_body(body), load_catalog(), OperatorConfig()).pods[0]
    spec: dict[str, Any] = json.loads(json.dumps(pod["spec"]))
    for key in ("hostname", "subdomain"):
        spec.pop(key, None)
    for c in spec["containers"]:
        c.pop("ports", None)  # the training-operator adds its own tfjob-port
        c["env"] = [e for e in c.get("env", []) if e["name"] != "TF_CONFIG"]
    return spec


def job_manifest(name: str, instances: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": instances,
            "parallelism": instances,
            "backoffLimit": 3,
            "template": {"spec": {**spec, "restartPolicy": "Never"}},
        },
    }


def tfjob_manifest(name: str, instances: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": name},
        "spec": {
            "runPolicy": {"backoffLimit": 3},
            "tfReplicaSpecs": {
                "Worker": {"replicas": instances, "restartPolicy": "Never", "template": {"spec": spec}}
            },
        },
    }


@dataclass
class Kind:
    name: str
    user: str
    pod_label: str
    group: str
    version: str
    plural: str

    def terminal(self, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if self.name == "ours":
            return status.get("phase") in ("Completed", "Failed")
        wanted = ("Complete", "Failed") if self.name == "job" else ("Succeeded", "Failed")
        return any(
            c.get("type") in wanted and c.get("status") == "True" for c in status.get("conditions") or []
        )

    def succeeded(self, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if self.name == "ours":
            return status.get("phase") == "Completed"
        wanted = "Complete" if self.name == "job" else "Succeeded"
        return any(
            c.get("type") == wanted and c.get("status") == "True" for c in status.get("conditions") or []
        )


KINDS = {
    "ours": Kind(
        "ours", OURS_USER, "training.ti.io/job-name", "training.ti.io", "v1alpha1", "tftrainingjobs"
    ),
    "job": Kind("job", JOB_CONTROLLER_USER, "batch.kubernetes.io/job-name", "batch", "v1", "jobs"),
    "kubeflow": Kind(
        "kubeflow", KUBEFLOW_USER, "training.kubeflow.org/job-name", "kubeflow.org", "v1", "tfjobs"
    ),
}


@dataclass
class Proc:
    """A controller process: how to read its memory and CPU, and stop it."""

    pid: int
    popen: subprocess.Popen[bytes] | None = None

    def status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def start_ours(plane: ControlPlane, kubeconfig: Path, namespace: str, qps: int | None, logs: Path) -> Proc:
    env = {**plane.env, "KUBECONFIG": str(kubeconfig), "TI_OPERATOR_METRICS_PORT": "0"}
    if qps is not None:
        env.update(TI_OPERATOR_QPS=str(qps), TI_OPERATOR_BURST=str(EQUAL_BURST))
    out = (logs / f"ours-{namespace}.log").open("wb")
    popen = subprocess.Popen(
        [str(KOPF), "run", "--standalone", "--namespace", namespace, str(REPO / "operator" / "handlers.py")],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    out.close()
    wait_for(
        lambda: (
            "Initial authentication has finished"
            in (logs / f"ours-{namespace}.log").read_text(errors="replace")
        ),
        "the operator to start",
        60,
    )
    time.sleep(2)  # its watches are being established
    return Proc(popen.pid, popen)


def start_training_operator(
    plane: ControlPlane, binary: Path, kubeconfig: Path, namespace: str, logs: Path
) -> Proc:
    """Out of a cluster, the training-operator's cert rotator needs: its Secret to exist (it fills it),
    certificate files in WEBHOOK_CERT_DIR (write_webhook_certs), and free ports for its servers. It
    waits for no ValidatingWebhookConfiguration: a missing one is logged and skipped."""
    write_webhook_certs()
    path = logs / f"training-operator-{namespace}.log"
    out = path.open("wb")
    popen = subprocess.Popen(
        [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            "--enable-scheme=tfjob",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            f"--webhook-server-port={free_port()}",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MY_POD_NAMESPACE": "kubeflow"},
        start_new_session=True,
    )
    out.close()

    def started() -> bool:
        if popen.poll() is not None:
            raise RuntimeError(f"the training-operator exited:\n{path.read_text(errors='replace')[-3000:]}")
        text = path.read_text(errors="replace")
        return "Starting workers" in text and "tfjob" in text.lower()

    wait_for(started, "the training-operator's workers", 90)
    time.sleep(1)
    return Proc(popen.pid, popen)


def restart_job_controller(plane: ControlPlane) -> Proc:
    """kube-controller-manager restarted, so VmHWM and CPU time are the coming run's (it runs every
    built-in controller, not only the Job controller: its memory is the whole manager's)."""
    kcm = plane.components["kube-controller-manager"]
    kcm.stop()
    size = kcm.log.stat().st_size if kcm.log.exists() else 0
    kcm.start()

    def synced() -> bool:
        assert kcm.running(), kcm.tail()
        with kcm.log.open("rb") as f:
            f.seek(size)
            return b'"Caches are synced" controller="job"' in f.read()

    wait_for(synced, "kube-controller-manager's Job controller", 60)
    time.sleep(3)
    assert kcm.proc is not None
    return Proc(kcm.proc.pid)


# ---- observing ------------------------------------------------------------------------------------


class Observer(threading.Thread):
    """Watches one resource in a namespace and calls back with (type, object, the time it was seen).

    Raw JSON, no model classes: deserialising hundreds of pods per second would load the two CPUs the
    systems under test share with this process."""

    def __init__(
        self, list_call: Callable[..., Any], namespace: str, on: Callable[[str, dict[str, Any], float], None]
    ) -> None:
        super().__init__(daemon=True)
        self.list_call, self.namespace, self.on = list_call, namespace, on
        self.stopped = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                data = json.loads(self.list_call(self.namespace, _preload_content=False).data)
                now = time.monotonic()
                for item in data["items"]:
                    self.on("LISTED", item, now)
                self.ready.set()
                response = self.list_call(
                    self.namespace, watch=True, resource_version=data["metadata"]["resourceVersion"],
                    timeout_seconds=10, allow_watch_bookmarks=False, _preload_content=False,
                )  # fmt: skip
                buffer = b""
                try:
                    for chunk in response.stream(65536, decode_content=False):
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        seen = time.monotonic()
                        for line in lines:
                            if line.strip():
                                event = json.loads(line)
                                if event["type"] == "ERROR":
                                    raise RuntimeError(event["object"].get("message"))
                                self.on(event["type"], event["object"], seen)
                        if self.stopped.is_set():
                            return
                finally:
                    response.release_conn()
            except Exception as err:  # a lost watch: list again
                log(f"watch of {self.namespace} restarted: {err!r}"[:300])
                time.sleep(0.2)


@dataclass
class Run:
    system: str
    rate: str
    workload: str
    jobs: int
    instances: int
    submitted: dict[str, float] = field(default_factory=dict)
    pod_created: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    pod_finished: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    terminal: dict[str, float] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def request_counts(metrics: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in metrics.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, value = line.rsplit(" ", 1)
            verb = re.search(r'verb="([^"]+)"', labels)
            if verb:
                counts[verb.group(1)] += int(float(value))
    return counts


def audit_counts(path: Path, offset: int, user: str) -> tuple[Counter[str], Counter[str]]:
    by_verb: Counter[str] = Counter()
    by_call: Counter[str] = Counter()
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("user", {}).get("username") != user:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", "?"))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            by_verb[event["verb"]] += 1
            by_call[f"{event['verb']} {resource}"] += 1
    return by_verb, by_call


def run_scenario(
    plane: ControlPlane,
    api: client.ApiClient,
    system: str,
    rate: str,
    jobs: int,
    instances: int,
    start: Callable[[str], Proc],
    work: Path,
    timeout: float,
) -> dict[str, Any]:
    kind = KINDS[system]
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)
    namespace = f"{system}-{rate}-{jobs}x{instances}"
    new_namespace(plane, core, namespace)
    spec = pod_spec(namespace, instances)
    proc = start(namespace)
    run = Run(system, rate, f"{jobs}x{instances}", jobs, instances)

    def on_pod(kind_: str, pod: dict[str, Any], seen: float) -> None:
        meta = pod["metadata"]
        job = (meta.get("labels") or {}).get(kind.pod_label)
        if job is None:
            return
        with run.lock:
            run.pod_created[job].setdefault(meta["uid"], seen)
            if (pod.get("status") or {}).get("phase") == "Succeeded":
                run.pod_finished[job].setdefault(meta["uid"], seen)

    def on_job(kind_: str, obj: dict[str, Any], seen: float) -> None:
        name = obj["metadata"]["name"]
        if kind.terminal(obj):
            with run.lock:
                run.terminal.setdefault(name, seen)
                if kind.succeeded(obj):
                    run.succeeded.add(name)

    if system == "job":
        list_jobs: Callable[..., Any] = batch.list_namespaced_job
    else:

        def list_jobs(namespace: str, **kw: Any) -> Any:
            return custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, **kw
            )

    observers = [
        Observer(core.list_namespaced_pod, namespace, on_pod),
        Observer(list_jobs, namespace, on_job),
    ]
    for o in observers:
        o.start()
        o.ready.wait(30)

    audit = work / "audit.log"
    audit_offset = audit.stat().st_size if audit.exists() else 0
    before = request_counts(plane.metrics())
    cpu_before = proc.cpu_seconds()
    peak_rss_kb = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_rss_kb
        while not sampling.is_set():
            with contextlib.suppress(OSError):
                peak_rss_kb = max(peak_rss_kb, proc.status_kb("VmRSS"))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def body(name: str) -> dict[str, Any]:
        if system == "ours":
            return ours_manifest(name, instances)
        if system == "job":
            return job_manifest(name, instances, spec)
        return tfjob_manifest(name, instances, spec)

    def create(name: str) -> None:
        manifest = body(name)
        run.submitted[name] = time.monotonic()
        if system == "job":
            batch.create_namespaced_job(namespace, manifest)  # type: ignore[arg-type]
        else:
            custom.create_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, manifest)

    names = [f"j{i:04d}" for i in range(jobs)]
    log(f"{system} [{rate}] {jobs} jobs x {instances} instances in {namespace}")
    began = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))
    submitted_in = time.monotonic() - began
    try:
        wait_for(lambda: len(run.terminal) >= jobs, f"{jobs} terminal {system} jobs", timeout, every=0.5)
    except TimeoutError as err:
        log(f"{err}; {len(run.terminal)} of {jobs} terminal")
    elapsed = time.monotonic() - began
    time.sleep(1)  # the last requests of the last reconciles
    after = request_counts(plane.metrics())
    cpu = proc.cpu_seconds() - cpu_before
    hwm = proc.status_kb("VmHWM")
    sampling.set()
    sampler.join()
    for o in observers:
        o.stopped.set()
    proc.stop()
    time.sleep(0.5)
    own, calls = audit_counts(audit, audit_offset, kind.user)

    created = []
    finished = []
    for name in names:
        pods = run.pod_created.get(name, {})
        if len(pods) >= instances and name in run.submitted:
            created.append(max(sorted(pods.values())[:instances]) - run.submitted[name])
        done = run.pod_finished.get(name, {})
        if len(done) >= instances and name in run.terminal:
            finished.append(max(0.0, run.terminal[name] - max(done.values())))
    total = {v: after[v] - before.get(v, 0) for v in after if after[v] - before.get(v, 0)}
    result = {
        "system": system,
        "rate": rate,
        "workload": run.workload,
        "jobs": jobs,
        "instances": instances,
        "namespace": namespace,
        "submitted_seconds": round(submitted_in, 2),
        "elapsed_seconds": round(elapsed, 1),
        "terminal_jobs": len(run.terminal),
        "succeeded_jobs": len(run.succeeded),
        "create_to_pods_p50": percentile(created, 0.5),
        "create_to_pods_p99": percentile(created, 0.99),
        "finished_to_terminal_p50": percentile(finished, 0.5),
        "finished_to_terminal_p99": percentile(finished, 0.99),
        "controller_requests_per_job": {v: round(n / jobs, 2) for v, n in sorted(own.items())},
        "controller_writes_per_job": round(sum(n for v, n in own.items() if v in WRITE_VERBS) / jobs, 2),
        "controller_calls": dict(calls.most_common()),
        "all_requests_per_job": {v: round(n / jobs, 2) for v, n in sorted(total.items())},
        "peak_rss_mb": round(max(peak_rss_kb, hwm) / 1024, 1),
        "cpu_seconds": round(cpu, 2),
    }
    log(
        f"  done in {elapsed:.0f}s: create->pods p99 {fmt(result['create_to_pods_p99'])}s, "
        f"finished->terminal p99 {fmt(result['finished_to_terminal_p99'])}s, "
        f"writes/job {result['controller_writes_per_job']}, RSS {result['peak_rss_mb']} MB, CPU {cpu:.1f}s"
    )
    return result


def rss_with_many_jobs(
    plane: ControlPlane,
    api: client.ApiClient,
    kubeconfig: Path,
    jobs: int,
    work: Path,
    ns: str = RSS_NAMESPACES[0],
) -> dict[str, Any]:
    """Our operator's memory with `jobs` two-instance jobs known: their pods run and never end."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    new_namespace(plane, core, ns)
    proc = start_ours(plane, kubeconfig, ns, None, work)
    idle_kb = proc.status_kb("VmRSS")
    log(f"RSS: {jobs} jobs x 2 instances in {ns}")
    began = time.monotonic()

    def create(i: int) -> None:
        custom.create_namespaced_custom_object(
            "training.ti.io", "v1alpha1", ns, "tftrainingjobs", ours_manifest(f"r{i:05d}", 2)
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(jobs)))

    def phases() -> Counter[str]:
        listed: Any = custom.list_namespaced_custom_object("training.ti.io", "v1alpha1", ns, "tftrainingjobs")
        items = listed["items"]
        return Counter((j.get("status") or {}).get("phase", "-") for j in items)

    try:
        wait_for(lambda: phases().get("Training", 0) >= jobs, f"{jobs} jobs Training", 900, every=5)
    except TimeoutError as err:
        log(str(err))
    settled = time.monotonic() - began
    samples = []
    for _ in range(30):  # 30 s with every job known, resyncs included
        samples.append(proc.status_kb("VmRSS"))
        time.sleep(1)
    result = {
        "jobs": jobs,
        "pods": len(core.list_namespaced_pod(ns, label_selector="training.ti.io/job-name").items),
        "phases": dict(phases()),
        "seconds_to_all_training": round(settled, 1),
        "idle_rss_mb": round(idle_kb / 1024, 1),
        "rss_mb_after": round(max(samples) / 1024, 1),
        "peak_rss_mb": round(proc.status_kb("VmHWM") / 1024, 1),
        "cpu_seconds": round(proc.cpu_seconds(), 1),
    }
    proc.stop()
    log(f"  RSS {result['rss_mb_after']} MB (peak {result['peak_rss_mb']} MB) with {jobs} jobs")
    return result


def unrelated_pods(
    plane: ControlPlane, api: client.ApiClient, kubeconfig: Path, count: int, work: Path
) -> dict[str, Any]:
    """What `count` pods without our job label cost our operator in a namespace it watches: its extra
    RSS and CPU-seconds while they are created, run and end, against the same window before them. Its
    pod watch has a server-side label selector, so none of them should reach it."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    new_namespace(plane, core, UNRELATED_NS)
    proc = start_ours(plane, kubeconfig, UNRELATED_NS, None, work)
    # One job of ours, so the operator watches the namespace's pods (it starts on a namespace's first job).
    custom.create_namespaced_custom_object(
        "training.ti.io", "v1alpha1", UNRELATED_NS, "tftrainingjobs", ours_manifest("anchor", 1)
    )
    wait_for(
        lambda: core.list_namespaced_pod(UNRELATED_NS, label_selector="training.ti.io/job-name").items,
        "the anchor job's pod",
        60,
    )
    time.sleep(3)
    spec = pod_spec(UNRELATED_NS, 1)
    window = 20.0
    rss_before, cpu_before = proc.status_kb("VmRSS"), proc.cpu_seconds()
    time.sleep(window)
    idle_cpu = proc.cpu_seconds() - cpu_before
    log(f"unrelated pods: {count} in {UNRELATED_NS}")
    began = time.monotonic()
    cpu_start = proc.cpu_seconds()

    def create(i: int) -> None:
        body = {"metadata": {"name": f"other-{i:05d}", "labels": {"app": "unrelated"}}, "spec": spec}
        core.create_namespaced_pod(UNRELATED_NS, body)  # type: ignore[arg-type]

    peaks = [0]
    sampling = threading.Event()

    def sample() -> None:  # from the first create on: creating 5,000 pods takes minutes on 2 CPUs
        while not sampling.is_set():
            peaks[0] = max(peaks[0], proc.status_kb("VmRSS"))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    while time.monotonic() - began < 600:  # until they have all run and ended
        done = core.list_namespaced_pod(UNRELATED_NS, label_selector="app=unrelated", _preload_content=False)
        phases = Counter(p["status"].get("phase") for p in json.loads(done.data)["items"])  # type: ignore[attr-defined]
        if phases.get("Succeeded", 0) >= count:
            break
        time.sleep(2)
    sampling.set()
    sampler.join()
    peak = peaks[0]
    elapsed = time.monotonic() - began
    extra_cpu = proc.cpu_seconds() - cpu_start - idle_cpu * elapsed / window
    result = {
        "pods": count,
        "seconds": round(elapsed, 1),
        "rss_mb_before": round(rss_before / 1024, 1),
        "rss_mb_peak_with": round(peak / 1024, 1),
        "extra_rss_mb": round((peak - rss_before) / 1024, 1),
        "extra_cpu_seconds": round(extra_cpu, 2),
    }
    core.delete_collection_namespaced_pod(UNRELATED_NS, label_selector="app=unrelated")
    proc.stop()
    log(f"  {count} unrelated pods: +{result['extra_rss_mb']} MB, +{result['extra_cpu_seconds']} CPU-s")
    return result


# ---- report ---------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


ROWS = [
    ("create -> all pods p50 (s)", "create_to_pods_p50"),
    ("create -> all pods p99 (s)", "create_to_pods_p99"),
    ("pods finished -> terminal p50 (s)", "finished_to_terminal_p50"),
    ("pods finished -> terminal p99 (s)", "finished_to_terminal_p99"),
    ("controller writes / job", "controller_writes_per_job"),
    ("controller requests / job", "controller_total_per_job"),
    ("all clients' requests / job", "all_total_per_job"),
    ("controller peak RSS (MB)", "peak_rss_mb"),
    ("controller CPU (s)", "cpu_seconds"),
    ("wall time (s)", "elapsed_seconds"),
    ("jobs succeeded", "succeeded_jobs"),
]


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        r["controller_total_per_job"] = round(sum(r["controller_requests_per_job"].values()), 2)
        r["all_total_per_job"] = round(sum(r["all_requests_per_job"].values()), 2)
    for workload in sorted({r["workload"] for r in results}, key=lambda w: -int(w.split("x")[0])):
        by = {(r["system"], r["rate"]): r for r in results if r["workload"] == workload}
        wanted = [
            ("ours @20/30", by.get(("ours", "equal"))),
            ("ours @default", by.get(("ours", "default"))),
            ("Job ctrl @20/30", by.get(("job", "equal"))),
            ("training-op @20/30", by.get(("kubeflow", "equal"))),
        ]
        cols = [(n, r) for n, r in wanted if r is not None]
        ours_eq, ours_def = by.get(("ours", "equal")), by.get(("ours", "default"))
        job, kf = by.get(("job", "equal")), by.get(("kubeflow", "equal"))
        header = [
            "workload " + workload,
            *[n for n, _ in cols],
            "eq: ours/Job",
            "eq: ours/TO",
            "def: ours/Job",
            "def: ours/TO",
        ]
        rows = [header]
        for label, key in ROWS:
            vals = [r.get(key) for _, r in cols]
            get = lambda r, k=key: None if r is None else r.get(k)  # noqa: E731
            rows.append(
                [
                    label,
                    *[fmt(v) for v in vals],
                    ratio(get(ours_eq), get(job)),
                    ratio(get(ours_eq), get(kf)),
                    ratio(get(ours_def), get(job)),
                    ratio(get(ours_def), get(kf)),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for i, row in enumerate(rows):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.append("")
        for name, r in cols:
            lines.append(f"  {name}: controller requests/job by verb {r['controller_requests_per_job']}")
        lines.append("")
    return "\n".join(lines)


def starter(
    plane: ControlPlane,
    system: str,
    rate: str,
    work: Path,
    ours_kc: Path,
    kf_kc: Path | None,
    binary: Path | None,
) -> Callable[[str], Proc]:
    """How to start `system`'s controller for a namespace."""

    def start(namespace: str) -> Proc:
        if system == "ours":
            return start_ours(plane, ours_kc, namespace, EQUAL_QPS if rate == "equal" else None, work)
        if system == "job":
            return restart_job_controller(plane)
        assert binary is not None and kf_kc is not None
        return start_training_operator(plane, binary, kf_kc, namespace, work)

    return start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--workloads", help="comma-separated JOBSxINSTANCES (default by --size)")
    parser.add_argument("--systems", default="ours,job,kubeflow")
    parser.add_argument("--rates", default="equal,default", help="equal (20 QPS/30 burst for all), default")
    parser.add_argument(
        "--rss-jobs", help="comma-separated job counts for the RSS measure (0: skip; default by --size)"
    )
    parser.add_argument(
        "--unrelated-pods",
        type=int,
        help="pods without our label for the cost measure (0: skip; default by --size)",
    )
    parser.add_argument("--run-seconds", type=float, default=5.0, help="how long each pod runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="per scenario")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()

    workloads = args.workloads or ("200x2,20x16" if args.size == "full" else "50x2,5x16")
    sizes = [tuple(int(x) for x in w.split("x")) for w in workloads.split(",")]
    rss_sizes = args.rss_jobs or ("1000,5000" if args.size == "full" else "250")
    rss_jobs = [int(n) for n in rss_sizes.split(",") if int(n)][: len(RSS_NAMESPACES)]
    unrelated = (
        args.unrelated_pods if args.unrelated_pods is not None else (5000 if args.size == "full" else 500)
    )
    systems = args.systems.split(",")
    rates = args.rates.split(",")
    notes: list[str] = []

    binary = ensure_training_operator(notes) if "kubeflow" in systems else None
    if binary is None and "kubeflow" in systems:
        systems.remove("kubeflow")
    work = Path(tempfile.mkdtemp(prefix="ti-bench-"))
    results: list[dict[str, Any]] = []
    rss: list[dict[str, Any]] = []
    others: dict[str, Any] | None = None
    began = time.monotonic()
    with bench_plane(work, args.run_seconds) as plane:
        log(f"plane up in {plane.startup_seconds:.0f}s at {plane.server}; work dir {work}")
        api = plane.api_client()
        api.configuration.connection_pool_maxsize = 32
        plane.kubectl(
            "apply", "--server-side", "-f", str(REPO / "crds" / "tftrainingjobs.training.ti.io.yaml")
        )
        if binary is not None:
            for crd in training_operator_crds():
                plane.kubectl("apply", "--server-side", "-f", str(crd))
            plane.kubectl("create", "namespace", "kubeflow")
            plane.kubectl("create", "secret", "generic", "training-operator-webhook-cert", "-n", "kubeflow")
        plane.kubectl("create", "namespace", SYSTEM_NS)
        ours_kc = token_kubeconfig(plane, "ti-operator", work)
        kf_kc = token_kubeconfig(plane, "training-operator", work) if binary is not None else None
        wait_for(lambda: len(client.CoreV1Api(api).list_node().items) >= 20, "the bench nodes", 60)

        for jobs, instances in sizes:
            for system in systems:
                for rate in rates if system == "ours" else ["equal"]:
                    start = starter(plane, system, rate, work, ours_kc, kf_kc, binary)
                    results.append(
                        run_scenario(plane, api, system, rate, jobs, instances, start, work, args.timeout)
                    )
        if "ours" in systems:
            for i, n in enumerate(rss_jobs):
                rss.append(rss_with_many_jobs(plane, api, ours_kc, n, work, RSS_NAMESPACES[i]))
        if unrelated and "ours" in systems:
            others = unrelated_pods(plane, api, ours_kc, unrelated, work)
        versions = {
            "kubernetes": plane.kubectl("version", "-o", "json").stdout,
            "kwok": subprocess.run(
                [str(plane.bin / "kwok"), "--version"], capture_output=True, text=True
            ).stdout.strip(),
        }
    report = table(results)
    print(report)
    for r in rss:
        print(
            f"RSS with {r['jobs']} jobs ({r['pods']} pods) known: {r['rss_mb_after']} MB (peak {r['peak_rss_mb']} MB); {r}"
        )
    if others is not None:
        print(
            f"{others['pods']} unrelated pods in a watched namespace: +{others['extra_rss_mb']} MB RSS, "
            f"+{others['extra_cpu_seconds']} CPU-seconds; {others}"
        )
    for note in notes:
        print("note:", note)
    server = json.loads(versions["kubernetes"]).get("serverVersion", {}).get("gitVersion")
    args.out.write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "args": {k: str(v) for k, v in vars(args).items()},
                "cpus": os.cpu_count(),
                "versions": {
                    "kube-apiserver": server,
                    "kwok": versions["kwok"],
                    "training-operator": TRAINING_OPERATOR_VERSION if binary else None,
                    "python": sys.version.split()[0],
                },
                "results": results,
                "rss": rss,
                "unrelated_pods": others,
                "notes": notes,
                "table": report,
                "seconds": round(time.monotonic() - began),
            },
            indent=2,
        )
    )
    log(f"wrote {args.out}; work dir {work} (component logs, audit log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
