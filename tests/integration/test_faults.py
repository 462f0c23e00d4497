"""Faults on a real control plane of the module's own: the operator SIGKILLed at random moments, the API
server restarted, a node deleted under running pods, concurrent writers on one job.

The plane is this module's, not the session's: the tests stop its kube-apiserver and delete its nodes,
and its kwok runs Stages that end pods by themselves (see `_stages`), so jobs finish without a test
playing the kubelet. Randomness is seeded (TI_FAULT_SEED), so a failing run can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support import kwok_stages as ks
from tests.support.controlplane import REPO, ControlPlane, kwok_node, running_control_plane
from tests.support.operator import CRD_FILE, OperatorProcess

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("TI_FAULT_SEED", "7"))
GROUP, VERSION, PLURAL = "training.ti.io", "v1alpha1", "tftrainingjobs"
LABEL_JOB = "training.ti.io/job-name"
LABEL_ATTEMPT = "training.ti.io/attempt"
BUCKET = "cos://models-1250000000"

# Namespaces and what kwok does to their pods.
NS_KILL = "faults-kill"  # attempt 0 dies with exit code 137 (a platform fault), attempt 1 completes
NS_RESTART = "faults-restart"  # pods complete after 2-4 s
NS_CONFLICT = "faults-conflict"  # pods complete after 2-4 s
NS_NODE = "faults-node"  # pods run until deleted
NS_CUT = "faults-cut"  # pods complete after 2-4 s
NS_CACHE = "faults-cache"  # pods run until deleted
NS_RACE = "faults-race"  # pods complete after 2-4 s
NAMESPACES = (NS_KILL, NS_RESTART, NS_CONFLICT, NS_NODE, NS_CUT, NS_CACHE, NS_RACE)

KILL_JOBS = 50
KILL_ROUNDS = 5


def _stages() -> list[dict[str, Any]]:
    ns = ".metadata.namespace"
    return ks.pod_stages(
        ks.end_stage(
            "platform-fault-on-first-attempt",
            [ks.expr(ns, "In", NS_KILL), ks.expr(ks.label(LABEL_ATTEMPT), "In", "0")],
            after_ms=1000,
            jitter_ms=3000,
            exit_code=137,
            main="tensorflow",
        ),
        ks.end_stage(
            "retried-attempt-completes",
            [ks.expr(ns, "In", NS_KILL), ks.expr(ks.label(LABEL_ATTEMPT), "NotIn", "0")],
            after_ms=1000,
            jitter_ms=3000,
        ),
        ks.end_stage(
            "complete",
            [ks.expr(ns, "In", NS_RESTART, NS_CONFLICT, NS_CUT, NS_RACE)],
            after_ms=2000,
            jitter_ms=2000,
        ),
    )


def _big_nodes(count: int) -> list[dict[str, Any]]:
    # 50 jobs of up to 3 CPU instances need more room than the plane's four nodes.
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": "500"}
    return [kwok_node(f"kwok-big-{i}", capacity) for i in range(count)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    config = ks.write_config(tmp_path_factory.mktemp("kwok") / "stages.yaml", _stages())
    failed_before = request.session.testsfailed
    with running_control_plane(kwok_config=config) as p:
        p.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        p.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_big_nodes(2)))
        p.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        for ns in NAMESPACES:
            p.kubectl("create", "namespace", ns)
        for ns in NAMESPACES:
            _eventually(
                lambda ns=ns: (
                    p.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0
                ),
                f"ServiceAccount default in {ns}",
            )
        _eventually(lambda: _ready_nodes(p) == 6, "six Ready nodes")
        yield p
        if request.session.testsfailed > failed_before:
            kept = REPO / "test-logs" / "faults"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(p.logs, kept)
            sys.stderr.write(f"\n[faults] component logs kept in {kept}\n")


def _ready_nodes(p: ControlPlane) -> int:
    out = p.kubectl(
        "get",
        "nodes",
        "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        check=False,
    ).stdout.split()
    return sum(s == "True" for s in out)


# ---- helpers --------------------------------------------------------------------------------------


def _eventually(check: Callable[[], Any], what: str, timeout: float = 60, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            last = check()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")


def manifest(name: str, count: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "role": "default",
        "instanceType": "TI.S.MEDIUM.POST",
        "instanceCount": count,
        "frameworkVersion": "2.0.0",
        "entryPoint": "train.py",
        "sourceDir": f"{BUCKET}/src/sourcedir.tar.gz",
        "outputPath": f"{BUCKET}/out",
        **spec,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFTrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }


class Api:
    def __init__(self, p: ControlPlane) -> None:
        self.api = p.api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def create(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, body
        )
        return created

    def job(self, ns: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return found

    def jobs(self, ns: str) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return {j["metadata"]["name"]: j for j in items}

    def pods(self, ns: str, job: str | None = None) -> list[dict[str, Any]]:
        selector = f"{LABEL_JOB}={job}" if job else LABEL_JOB
        items = self.core.list_namespaced_pod(ns, label_selector=selector).items
        return [self.api.sanitize_for_serialization(p) for p in items]

    def events(self, ns: str, name: str) -> list[str]:
        items = self.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
        return [f"{e.reason}: {e.message}" for e in items]


def phase(j: dict[str, Any]) -> str | None:
    return (j.get("status") or {}).get("phase")


class PodCensus(threading.Thread):
    """Watches a namespace's job pods and records, per job, the most pods that existed at one moment.

    A pod exists from its creation to its removal from the API server (terminating pods count). The
    watch sees every change in resourceVersion order, so the count after each event is the truth at
    that version. After a lost watch the census starts again from a fresh list.
    """

    def __init__(self, p: ControlPlane, namespace: str) -> None:
        super().__init__(name=f"census-{namespace}", daemon=True)
        self.core = client.CoreV1Api(p.api_client())
        self.namespace = namespace
        self.live: dict[str, set[str]] = defaultdict(set)  # job -> uids of pods existing now
        self.peak: dict[str, int] = defaultdict(int)
        self.seen: dict[str, set[str]] = defaultdict(set)  # job -> every pod uid ever seen
        self.stopped = threading.Event()
        self.listed = threading.Event()
        self.errors: list[str] = []
        self.history: dict[str, list[str]] = defaultdict(list)  # job -> what happened to its pods

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                listing = self.core.list_namespaced_pod(self.namespace, label_selector=LABEL_JOB)
                self.live.clear()
                for pod in listing.items:
                    self._add(pod)
                self.listed.set()
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=LABEL_JOB,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=5,
                )
                for event in stream:
                    pod = event["object"]
                    self.history[pod.metadata.labels[LABEL_JOB]].append(
                        f"{event['type']} {pod.metadata.name} uid={pod.metadata.uid[:8]} "
                        f"attempt={pod.metadata.labels.get(LABEL_ATTEMPT)} phase={pod.status.phase} "
                        f"deleting={bool(pod.metadata.deletion_timestamp)} rv={pod.metadata.resource_version}"
                    )
                    if event["type"] == "DELETED":
                        self.live[pod.metadata.labels[LABEL_JOB]].discard(pod.metadata.uid)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._add(pod)
                    if self.stopped.is_set():
                        return
            except Exception as err:  # a lost watch: list again
                self.errors.append(repr(err))
                time.sleep(0.2)

    def _add(self, pod: Any) -> None:
        job = pod.metadata.labels[LABEL_JOB]
        self.live[job].add(pod.metadata.uid)
        self.seen[job].add(pod.metadata.uid)
        self.peak[job] = max(self.peak[job], len(self.live[job]))

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@contextlib.contextmanager
def operators(p: ControlPlane, namespace: str, logs: Path) -> Iterator[list[OperatorProcess]]:
    """Yields a list of operator processes for `namespace`; the last one is the live one. Each is
    stopped afterwards, and every log is printed if the test failed."""
    started: list[OperatorProcess] = []
    try:
        yield started
    finally:
        for op in started:
            op.stop()
        for op in started:
            sys.stderr.write(f"\n--- {op.log}, last lines:\n{op.tail(25)}\n")


def start_operator(
    p: ControlPlane, namespace: str, logs: Path, started: list[OperatorProcess], **more: str
) -> OperatorProcess:
    env = {**p.env, "TI_OPERATOR_METRICS_PORT": "0", "TI_STOP_GRACE_SECONDS": "1", **more}
    # Beside the component logs, which the module keeps in test-logs/faults when a test fails.
    op = OperatorProcess(namespace, p.logs / f"operator-{namespace}-{len(started)}.log", env).start()
    started.append(op)
    return op


def tracebacks(started: list[OperatorProcess]) -> list[str]:
    found = []
    for op in started:
        text = op.log.read_text(errors="replace")
        if "Traceback" in text:
            found.append(f"{op.log}:\n{text[text.index('Traceback') - 300 :][:3000]}")
    return found


# ---- the faults -----------------------------------------------------------------------------------


def test_operator_killed_at_random_moments_converges_without_extra_or_orphan_pods(
    plane: ControlPlane, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    api = Api(plane)
    counts = {f"job-{i:02d}": rng.randint(1, 3) for i in range(KILL_JOBS)}
    doomed = set(rng.sample(sorted(counts), 5))  # deleted while the operator is down
    census = PodCensus(plane, NS_KILL)
    census.start()
    assert census.listed.wait(30), f"the pod census never listed: {census.errors}"

    with operators(plane, NS_KILL, tmp_path) as started:
        start_operator(plane, NS_KILL, tmp_path, started)
        for name, count in counts.items():
            api.create(NS_KILL, manifest(name, count))
        kills = []
        for round_ in range(KILL_ROUNDS):
            time.sleep(rng.uniform(0.5, 4.0))
            started[-1].kill()
            kills.append(sum(1 for j in api.jobs(NS_KILL).values() if phase(j) == "Completed"))
            if round_ == 2:
                for name in doomed:
                    api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS_KILL, PLURAL, name)
            time.sleep(rng.uniform(0.0, 1.0))
            start_operator(plane, NS_KILL, tmp_path, started)

        survivors = {n: c for n, c in counts.items() if n not in doomed}

        def converged() -> bool:
            jobs = api.jobs(NS_KILL)
            return set(jobs) == set(survivors) and all(phase(j) == "Completed" for j in jobs.values())

        _eventually(converged, f"{len(survivors)} jobs Completed", timeout=150, every=1)
        # No pod of a deleted job, and none of an old attempt, may outlive the garbage collector.
        _eventually(
            lambda: {p["metadata"]["labels"][LABEL_JOB] for p in api.pods(NS_KILL)} <= set(survivors),
            "the deleted jobs' pods to be collected",
            timeout=60,
        )
        census.stop()
        jobs = api.jobs(NS_KILL)
        assert started[-1].alive(), started[-1].tail()
        assert not tracebacks(started), "\n".join(tracebacks(started))

    over = {j: (census.peak[j], c) for j, c in counts.items() if census.peak[j] > c}
    assert not over, f"jobs that had more pods at once than instanceCount (peak, instanceCount): {over}"
    # Every surviving job ran two attempts (the first ended in a platform fault) and no more: a kill
    # never made the operator retry twice or recreate an instance it had already created.
    for name, count in survivors.items():
        status = jobs[name]["status"]
        assert status["restartCount"] == 1, (name, status)
        assert len(census.seen[name]) == 2 * count, "\n".join([name, *census.history[name]])
    pods = api.pods(NS_KILL)
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        by_job[pod["metadata"]["labels"][LABEL_JOB]].append(pod)
    for name, count in survivors.items():
        uid = jobs[name]["metadata"]["uid"]
        mine = by_job[name]
        assert len(mine) == count, (name, [p["metadata"]["name"] for p in mine])
        for pod in mine:
            owners = [o["uid"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")]
            assert owners == [uid], (pod["metadata"]["name"], owners)
            assert pod["metadata"]["labels"][LABEL_ATTEMPT] == "1"
            assert pod["status"]["phase"] == "Succeeded"
    services = api.core.list_namespaced_service(NS_KILL).items
    assert sorted(s.metadata.name for s in services) == sorted(n for n, c in survivors.items() if c > 1)
    assert kills[0] < len(survivors), "every job had finished before the first kill: the kills tested nothing"


def test_operator_recovers_by_itself_after_the_apiserver_restarts(
    plane: ControlPlane, tmp_path: Path
) -> None:
    api = Api(plane)
    with operators(plane, NS_RESTART, tmp_path) as started:
        op = start_operator(plane, NS_RESTART, tmp_path, started)
        before = [f"before-{i}" for i in range(6)]
        for name in before:
            api.create(NS_RESTART, manifest(name, 2))
        _eventually(lambda: any(phase(j) for j in api.jobs(NS_RESTART).values()), "the operator at work")

        apiserver = plane.components["kube-apiserver"]
        apiserver.stop()
        time.sleep(6)  # long enough for every client's watch and requests to fail
        apiserver.start()
        _eventually(plane._ready, "kube-apiserver ready again", timeout=90)
        back = time.monotonic()
        api = Api(plane)

        after = [f"after-{i}" for i in range(3)]
        for name in after:
            _eventually(lambda name=name: api.create(NS_RESTART, manifest(name, 2)), f"create {name}")

        def done() -> list[str]:
            jobs = api.jobs(NS_RESTART)
            return [n for n in before + after if phase(jobs.get(n, {})) != "Completed"]

        _eventually(lambda: not done(), "every job Completed after the restart", timeout=120, every=1)
        sys.stderr.write(f"[faults] converged {time.monotonic() - back:.1f}s after the API server was back\n")
        assert op.alive() and len(started) == 1, "the operator had to be restarted"
        for name in before + after:
            assert len(api.pods(NS_RESTART, name)) == 2
            created = [e for e in api.events(NS_RESTART, name) if e.startswith("Created")]
            # One Created event, or none when the API server went away between the pods and the event.
            assert len(created) <= 1, (name, created)


def test_instances_on_a_deleted_node_are_retried(plane: ControlPlane, tmp_path: Path) -> None:
    api = Api(plane)
    with operators(plane, NS_NODE, tmp_path) as started:
        start_operator(plane, NS_NODE, tmp_path, started)
        # One GPU per instance: both instances land on the two GPU nodes.
        api.create(NS_NODE, manifest("stranded", 2, instanceType="ML.GN8.LARGE56"))

        def running(attempt: str) -> list[dict[str, Any]] | None:
            pods = api.pods(NS_NODE, "stranded")
            ok = len(pods) == 2 and all(
                p["status"].get("phase") == "Running"
                and p["metadata"]["labels"][LABEL_ATTEMPT] == attempt
                and not p["metadata"].get("deletionTimestamp")
                for p in pods
            )
            return pods if ok else None

        first = _eventually(lambda: running("0"), "two Running pods")
        _eventually(lambda: phase(api.job(NS_NODE, "stranded")) == "Training", "phase Training")
        lost = first[0]["spec"]["nodeName"]
        node = plane.kubectl("get", "node", lost, "-o", "json").stdout
        plane.kubectl("delete", "node", lost)
        try:
            # The pod garbage collector removes pods bound to a node that no longer exists (after its
            # 40 s quarantine); the operator must take that for a platform fault and retry.
            second = _eventually(lambda: running("1"), "the retried attempt Running", timeout=150, every=1)
        finally:
            plane.kubectl("create", "-f", "-", input=node, check=False)
        assert all(p["spec"]["nodeName"] != lost for p in second)
        status = api.job(NS_NODE, "stranded")["status"]
        assert status["restartCount"] == 1
        assert phase(api.job(NS_NODE, "stranded")) in ("Starting", "Downloading", "Training")
        restarting = [e for e in api.events(NS_NODE, "stranded") if e.startswith("Restarting")]
        assert len(restarting) == 1 and first[0]["metadata"]["name"] in restarting[0], restarting
        assert not tracebacks(started), "\n".join(tracebacks(started))


def test_concurrent_writers_on_one_job_lose_nothing(plane: ControlPlane, tmp_path: Path) -> None:
    api = Api(plane)
    writers, updates = 4, 8
    conflicts = [0] * writers
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        custom = client.CustomObjectsApi(plane.api_client())
        try:
            for n in range(updates):
                first = n == 0
                while True:
                    body = custom.get_namespaced_custom_object(GROUP, VERSION, NS_CONFLICT, PLURAL, "shared")
                    body["metadata"].setdefault("labels", {})[f"writer-{i}"] = str(n)
                    body["metadata"].setdefault("annotations", {})[f"test.ti.io/w{i}-{n}"] = "written"
                    if first:
                        first = False
                        barrier.wait(30)  # every writer holds the same resourceVersion: all but one conflict
                    try:
                        custom.replace_namespaced_custom_object(
                            GROUP, VERSION, NS_CONFLICT, PLURAL, "shared", body
                        )
                        break
                    except ApiException as err:
                        if err.status != 409:
                            raise
                        conflicts[i] += 1
        except BaseException as err:
            failures.append(err)

    with operators(plane, NS_CONFLICT, tmp_path) as started:
        start_operator(plane, NS_CONFLICT, tmp_path, started)
        api.create(NS_CONFLICT, manifest("shared", 3))
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert sum(conflicts) >= writers - 1, conflicts

        job = _eventually(
            lambda: (j := api.job(NS_CONFLICT, "shared")) and phase(j) == "Completed" and j,
            "phase Completed",
            timeout=90,
        )
        labels, annotations = job["metadata"]["labels"], job["metadata"]["annotations"]
        for i in range(writers):
            assert labels[f"writer-{i}"] == str(updates - 1)
            for n in range(updates):
                assert annotations[f"test.ti.io/w{i}-{n}"] == "written"
        status = job["status"]
        assert status["restartCount"] == 0
        assert [i["phase"] for i in status["instances"]] == ["Succeeded"] * 3
        assert status["modelArtifacts"] == f"{BUCKET}/out/shared/output/model.tar.gz"
        assert len(api.pods(NS_CONFLICT, "shared")) == 3
        reasons = [e.split(":")[0] for e in api.events(NS_CONFLICT, "shared")]
        assert reasons.count("Created") == 1 and reasons.count("Completed") == 1, reasons
        assert not tracebacks(started), "\n".join(tracebacks(started))
