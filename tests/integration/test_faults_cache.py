"""Faults only a cache can get wrong (issue 11), on the fault suite's plane (tests/integration/test_faults.py):
the operator reconciles from watches, so each case makes what it watches lag behind or lie about the API
server, and checks that no pod is duplicated, none is orphaned, and nothing is lost.

- the operator's connections cut (a TCP proxy between it and the API server) while its pods change;
- a pod deleted and created again under the same name by someone else;
- a job deleted and created again under the same name while its old pods still terminate;
- the operator's status writes racing users' `kubectl patch` of the same jobs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.test_faults import (
    GROUP,
    LABEL_ATTEMPT,
    LABEL_JOB,
    NS_CACHE,
    NS_CUT,
    NS_RACE,
    PLURAL,
    VERSION,
    Api,
    PodCensus,
    _eventually,
    manifest,
    operators,
    phase,
    plane,
    start_operator,
    tracebacks,
)
from tests.support.controlplane import ControlPlane
from tests.support.operator import KWOK_HANDS_OFF

pytestmark = pytest.mark.integration
__all__ = ["plane"]  # the fault suite's module fixture, started again for this module


class CuttableProxy(threading.Thread):
    """TCP forwarding from a local port to the API server; `cut()` drops every connection and
    refuses new ones until `restore()`: the operator's watches break mid-stream, as over a lossy link."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cuts = 0

    def run(self) -> None:
        while True:
            try:
                client_sock, _ = self.server.accept()
            except OSError:
                return
            if not self.open.is_set():
                client_sock.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client_sock.close()
                continue
            with self.lock:
                self.conns += [client_sock, upstream]
            for a, b in ((client_sock, upstream), (upstream, client_sock)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        self.cuts += 1
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


@contextlib.contextmanager
def proxied_kubeconfig(p: ControlPlane, path: Path) -> Iterator[tuple[Path, CuttableProxy]]:
    host, port = p.server.removeprefix("https://").rsplit(":", 1)
    proxy = CuttableProxy((host, int(port)))
    proxy.start()
    path.write_text(p.kubeconfig.read_text().replace(p.server, f"https://{host}:{proxy.port}"))
    try:
        yield path, proxy
    finally:
        proxy.close()


def owners(pod: dict[str, Any]) -> list[str]:
    return [o["uid"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")]


def test_watches_cut_and_resumed_while_pods_change_lose_no_event(plane: ControlPlane, tmp_path: Path) -> None:
    api = Api(plane)
    counts = {f"cut-{i}": 1 + i % 3 for i in range(12)}
    census = PodCensus(plane, NS_CUT)
    census.start()
    assert census.listed.wait(30)
    with (
        proxied_kubeconfig(plane, tmp_path / "proxied.kubeconfig") as (kubeconfig, proxy),
        operators(plane, NS_CUT, tmp_path) as started,
    ):
        # A resync soon after the cuts: a reconcile whose requests the cut broke is not requeued by itself.
        start_operator(plane, NS_CUT, tmp_path, started, KUBECONFIG=str(kubeconfig), TI_RESYNC_SECONDS="10")
        for name, count in counts.items():
            api.create(NS_CUT, manifest(name, count))
        # Pods are created, scheduled, run and end (kwok: 2-4 s) while the operator hears nothing.
        for pause in (1.0, 2.5, 1.5, 3.0):
            time.sleep(pause)
            proxy.cut()
            time.sleep(pause)
            proxy.restore()

        def done() -> bool:
            return all(phase(j) == "Completed" for j in api.jobs(NS_CUT).values())

        _eventually(done, "every job Completed after the cuts", timeout=120, every=1)
        census.stop()
        assert started[-1].alive(), started[-1].tail()
        # (Reconciles whose requests a cut broke log their tracebacks: those are expected here.)
        log = started[-1].log.read_text(errors="replace")
        assert "lost" in log, "the cuts never broke the operator's watches: the test tested nothing"
    for name, count in counts.items():
        assert census.peak[name] <= count, (name, census.history[name])
        assert len(census.seen[name]) == count, "\n".join([name, *census.history[name]])
        status = api.job(NS_CUT, name)["status"]
        assert (
            status["restartCount"] == 0 and [i["phase"] for i in status["instances"]] == ["Succeeded"] * count
        )
        # One Created event, or none when a cut came between the pods and the event (Events are
        # best effort: a lost one does not fail the reconcile).
        created = [e for e in api.events(NS_CUT, name) if e.startswith("Created")]
        assert len(created) <= 1, (name, created)


def test_a_pod_recreated_under_its_name_by_someone_else_is_never_taken_nor_deleted(
    plane: ControlPlane, tmp_path: Path
) -> None:
    api = Api(plane)
    name = "impostor"
    with operators(plane, NS_CACHE, tmp_path) as started:
        start_operator(plane, NS_CACHE, tmp_path, started)
        api.create(NS_CACHE, manifest(name, 2))
        _eventually(lambda: phase(api.job(NS_CACHE, name)) == "Training", "phase Training")
        pods = sorted(api.pods(NS_CACHE, name), key=lambda p: p["metadata"]["name"])
        victim = pods[0]["metadata"]["name"]
        # Someone deletes an instance's pod and at once creates their own under that name, without
        # the job's labels: the operator never sees it in its watch, only through a create's 409.
        api.core.delete_namespaced_pod(victim, NS_CACHE, grace_period_seconds=0)
        _eventually(
            lambda: not [p for p in api.pods(NS_CACHE, name) if p["metadata"]["name"] == victim],
            f"{victim} gone",
        )
        theirs = api.core.create_namespaced_pod(
            NS_CACHE,
            {
                "metadata": {"name": victim, "annotations": KWOK_HANDS_OFF},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        )

        def waiting() -> dict[str, Any] | None:
            status = api.job(NS_CACHE, name).get("status") or {}
            return (
                status if status.get("reason") == "FailedCreate" and status.get("restartCount") == 1 else None
            )

        status = _eventually(waiting, "the retry waiting for the name to be free", timeout=60)
        created = next(c for c in status["conditions"] if c["type"] == "Created")
        assert victim in created["message"] and "not a pod of any TFTrainingJob" in created["message"]
        still = api.core.read_namespaced_pod(victim, NS_CACHE)
        assert still.metadata.uid == theirs.metadata.uid and not still.metadata.deletion_timestamp
        assert not (still.metadata.labels or {}).get(LABEL_JOB), "the operator took someone else's pod"

        api.core.delete_namespaced_pod(victim, NS_CACHE, grace_period_seconds=0)

        def retried() -> list[dict[str, Any]] | None:
            ours = api.pods(NS_CACHE, name)
            ok = len(ours) == 2 and all(
                p["metadata"]["labels"][LABEL_ATTEMPT] == "1" and p["status"].get("phase") == "Running"
                for p in ours
            )
            return ours if ok else None

        ours = _eventually(retried, "the retried attempt Running", timeout=90, every=1)
        uid = api.job(NS_CACHE, name)["metadata"]["uid"]
        assert all(owners(p) == [uid] for p in ours)
        assert api.job(NS_CACHE, name)["status"]["restartCount"] == 1
        assert not tracebacks(started), "\n".join(tracebacks(started))
        api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS_CACHE, PLURAL, name)


def test_a_job_recreated_under_its_name_waits_for_its_predecessors_terminating_pods(
    plane: ControlPlane, tmp_path: Path
) -> None:
    api = Api(plane)
    name = "reborn"
    census = PodCensus(plane, NS_CACHE)
    census.start()
    assert census.listed.wait(30)
    with operators(plane, NS_CACHE, tmp_path) as started:
        start_operator(plane, NS_CACHE, tmp_path, started)
        old_uid = api.create(NS_CACHE, manifest(name, 2))["metadata"]["uid"]
        _eventually(lambda: phase(api.job(NS_CACHE, name)) == "Training", "phase Training")
        old = api.pods(NS_CACHE, name)
        for p in old:  # the old pods take their time to terminate: kwok leaves them alone
            api.core.patch_namespaced_pod(
                p["metadata"]["name"], NS_CACHE, {"metadata": {"annotations": KWOK_HANDS_OFF}}
            )
        api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS_CACHE, PLURAL, name)
        _eventually(
            lambda: all(p["metadata"].get("deletionTimestamp") for p in api.pods(NS_CACHE, name)),
            "the garbage collector deleting the old pods",
        )
        new_uid = _eventually(lambda: api.create(NS_CACHE, manifest(name, 2))["metadata"]["uid"], "re-create")
        assert new_uid != old_uid
        _eventually(
            lambda: (api.job(NS_CACHE, name).get("status") or {}).get("reason") == "WaitingForPods",
            "the new job waiting for the old pods",
        )
        time.sleep(3)  # a few reconciles later, still nothing of the new job's
        assert {owners(p)[0] for p in api.pods(NS_CACHE, name)} == {old_uid}
        for p in old:  # the old pods' containers end: the kubelet removes them
            with contextlib.suppress(ApiException):
                api.core.delete_namespaced_pod(p["metadata"]["name"], NS_CACHE, grace_period_seconds=0)

        def new_pods() -> list[dict[str, Any]] | None:
            ours = api.pods(NS_CACHE, name)
            return ours if len(ours) == 2 and all(owners(p) == [new_uid] for p in ours) else None

        _eventually(new_pods, "the new job's pods", timeout=60)
        _eventually(lambda: phase(api.job(NS_CACHE, name)) == "Training", "the new job Training")
        census.stop()
        assert census.peak[name] <= 2, census.history[name]
        assert not tracebacks(started), "\n".join(tracebacks(started))
        api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS_CACHE, PLURAL, name)


def test_status_writes_racing_users_patches_lose_neither(plane: ControlPlane, tmp_path: Path) -> None:
    api = Api(plane)
    names = [f"raced-{i}" for i in range(8)]
    stop = threading.Event()
    patched: dict[str, int] = dict.fromkeys(names, 0)

    def user(name: str) -> None:
        # `kubectl patch` of the job, as fast as it goes: every write moves its resourceVersion.
        while not stop.is_set():
            n = patched[name] + 1
            time.sleep(0.2)
            with contextlib.suppress(ApiException):
                api.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NS_RACE, PLURAL, name, {"metadata": {"labels": {"user-patch": str(n)}}}
                )
                patched[name] = n

    with operators(plane, NS_RACE, tmp_path) as started:
        start_operator(plane, NS_RACE, tmp_path, started)
        for name in names:
            api.create(NS_RACE, manifest(name, 2))
        users = [threading.Thread(target=user, args=(n,), daemon=True) for n in names]
        for t in users:
            t.start()
        try:
            _eventually(
                lambda: all(phase(api.job(NS_RACE, n)) == "Completed" for n in names),
                "every raced job Completed",
                timeout=120,
                every=1,
            )
        finally:
            stop.set()
            for t in users:
                t.join(10)
        log = started[-1].log.read_text(errors="replace")
        assert not tracebacks(started), "\n".join(tracebacks(started))
    assert "changed meanwhile" in log, "no status write ever met a user's patch: the test tested nothing"
    for name in names:
        job = api.job(NS_RACE, name)
        assert job["metadata"]["labels"]["user-patch"] == str(patched[name])
        status = job["status"]
        assert status["restartCount"] == 0 and [i["phase"] for i in status["instances"]] == ["Succeeded"] * 2
        assert status["modelArtifacts"].endswith(f"/{name}/output/model.tar.gz")
        reasons = [e.split(":")[0] for e in api.events(NS_RACE, name)]
        assert reasons.count("Created") == 1 and reasons.count("Completed") == 1, (name, reasons)
