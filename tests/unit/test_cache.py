"""The watch caches: versions never go back, expectations are met by what the cache shows, and an
Informer resumes from its resourceVersion, lists again on 410 Gone, and keeps objects raw and slim."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ti import contract
from ti.operator.cache import (
    EXPECTATION_TIMEOUT_SECONDS,
    Expectations,
    Informer,
    JobStore,
    ObjectStore,
    rv_newer,
    slim,
)

pytestmark = pytest.mark.unit

NS = "team-a"


def pod(
    name: str, uid: str, rv: str = "1", job: str = "mnist", attempt: str = "0", **meta: Any
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "resourceVersion": rv,
            "labels": {contract.LABEL_JOB: job, contract.LABEL_ATTEMPT: attempt},
            "managedFields": [{"manager": "kubectl"}],
            **meta,
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "tensorflow", "image": "tf"}]},
        "status": {"phase": "Running"},
    }


def job(rv: str, uid: str = "j1", phase: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "mnist", "namespace": NS, "uid": uid, "resourceVersion": rv}}
    if phase:
        body["status"] = {"phase": phase}
    return body


def test_a_job_store_never_goes_back_to_an_older_version_of_the_same_job() -> None:
    store = JobStore()
    store.put(job("10", phase="Starting"))  # our status write's response
    store.put(job("9"))  # the watch event of the version before it, late
    assert store.get(NS, "mnist")["status"]["phase"] == "Starting"  # type: ignore[index]
    store.put(job("3", uid="j2"))  # a job created again under the same name: another uid
    assert store.get(NS, "mnist")["metadata"]["uid"] == "j2"  # type: ignore[index]
    store.delete(NS, "mnist", "j1")  # the old job's DELETED does not remove the new one
    assert store.get(NS, "mnist") is not None
    store.delete(NS, "mnist", "j2")
    assert store.get(NS, "mnist") is None


def test_resource_versions_compare_as_numbers_of_one_object_only() -> None:
    assert rv_newer(job("10"), job("9")) and not rv_newer(job("9"), job("10"))
    assert rv_newer(job("1", uid="other"), job("9"))
    assert rv_newer(job("x"), job("9"))


def test_slim_drops_managed_fields_and_a_pods_spec_but_its_node() -> None:
    s = slim(pod("mnist-worker-0", "u1"))
    assert "managedFields" not in s["metadata"] and s["spec"] == {"nodeName": "node-1"}
    assert s["metadata"]["labels"][contract.LABEL_JOB] == "mnist"
    service = {"metadata": {"name": "mnist"}, "spec": {"clusterIP": "None"}}
    assert slim(service)["spec"] == {"clusterIP": "None"}


def test_an_object_store_indexes_by_job_and_a_deleted_event_of_an_old_uid_keeps_the_new_pod() -> None:
    store = ObjectStore()
    assert store.upsert(NS, pod("mnist-worker-0", "u1")) == (NS, "mnist")
    store.upsert(NS, pod("other-worker-0", "u9", job="other"))
    store.upsert(NS, pod("mnist-worker-0", "u2", rv="5"))  # recreated under the same name
    store.remove(NS, pod("mnist-worker-0", "u1"))
    assert [p["metadata"]["uid"] for p in store.of(NS, "mnist")] == ["u2"]
    changed = store.replace(NS, [pod("mnist-worker-1", "u3")])
    assert changed == {(NS, "mnist"), (NS, "other")}
    assert store.of(NS, "other") == [] and store.count() == 1
    assert store.upsert(NS, {"metadata": {"name": "unlabelled", "labels": {}}}) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_expectations_of_creates_are_met_by_the_pod_of_that_attempt_only() -> None:
    clock = Clock()
    e = Expectations(clock)
    key = (NS, "mnist")
    e.expect(key, creates=[pod("mnist-worker-0", "", attempt="1"), pod("mnist-worker-1", "", attempt="1")])
    clock.now += 2
    # The old attempt's pod of the same name does not count.
    assert e.unmet(key, [pod("mnist-worker-0", "old", attempt="0")]) == 2
    assert e.unmet(key, [pod("mnist-worker-0", "a", attempt="1")]) == 2
    e.lower(key, create="mnist-worker-1")  # its create failed: nothing to wait for
    assert e.unmet(key, [pod("mnist-worker-0", "a", attempt="1")]) is None
    assert e.unmet(key, []) is None  # met once, forgotten


def test_expectations_of_deletes_are_met_once_the_pod_is_gone_or_terminating() -> None:
    clock = Clock()
    e = Expectations(clock)
    key = (NS, "mnist")
    e.expect(key, deletes=["u1", "u2"])
    clock.now += EXPECTATION_TIMEOUT_SECONDS + 1
    waited = e.unmet(key, [pod("mnist-worker-0", "u1"), pod("mnist-worker-1", "u2")])
    assert waited is not None and waited > EXPECTATION_TIMEOUT_SECONDS  # the caller lists fresh
    terminating = pod("mnist-worker-0", "u1", deletionTimestamp="2026-01-01T00:00:00Z")
    assert e.unmet(key, [terminating]) is None


# ---- the Informer, against a fake list call that speaks the API server's raw JSON --------------------


class Response:
    def __init__(self, body: bytes, chunks: list[bytes] | None = None) -> None:
        self.data = body
        self.chunks = chunks or []

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield from self.chunks

    def release_conn(self) -> None:
        pass


class FakeApi:
    """Lists and watches as the API server does; records each call's resourceVersion."""

    def __init__(self, watches: list[list[dict[str, Any]] | Exception]) -> None:
        self.lists = 0
        self.watched_from: list[str | None] = []
        self.watches = watches
        self.done = threading.Event()
        self.selectors: list[str] = []

    def __call__(self, namespace: str, **kw: Any) -> Response:
        assert kw["_preload_content"] is False
        self.selectors.append(kw["label_selector"])
        if not kw.get("watch"):
            self.lists += 1
            items = [pod("mnist-worker-0", f"list{self.lists}", rv="10")]
            return Response(json.dumps({"metadata": {"resourceVersion": "10"}, "items": items}).encode())
        self.watched_from.append(kw["resource_version"])
        if not self.watches:
            self.done.set()
            threading.Event().wait(5)
            raise RuntimeError("closed")
        events = self.watches.pop(0)
        if isinstance(events, Exception):
            raise events
        text = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        return Response(b"", [text[:7], text[7:]])  # an event split across chunks


class Gone(Exception):
    status = 410


def test_an_informer_resumes_from_the_last_version_and_lists_again_on_410() -> None:
    api = FakeApi(
        [
            [
                {"type": "ADDED", "object": pod("mnist-worker-1", "b", rv="11")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            ConnectionResetError("cut"),
            [{"type": "DELETED", "object": pod("mnist-worker-1", "b", rv="16")}],
            [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
            Gone(),
        ]
    )
    store, changed = ObjectStore(), []
    informer = Informer(api, NS, store, changed.append)
    informer.start()
    assert api.done.wait(20), api.watched_from
    informer.stop()
    # Resumed at the bookmark, and again there after the cut; listed again after each 410 (an event and an HTTP status).
    assert api.watched_from == ["10", "15", "15", "16", "10", "10"]
    assert api.lists == 3 and set(api.selectors) == {contract.LABEL_JOB}
    assert [p["metadata"]["uid"] for p in store.of(NS, "mnist")] == ["list3"]
    assert "managedFields" not in store.of(NS, "mnist")[0]["metadata"]
    assert set(changed) == {(NS, "mnist")} and len(changed) >= 4


def test_an_object_store_says_when_a_jobs_object_last_left_it() -> None:
    clock = Clock()
    store = ObjectStore(clock)
    store.upsert(NS, pod("mnist-worker-0", "u1"))
    assert store.gone_since(NS, "mnist") is None
    store.remove(NS, pod("mnist-worker-0", "other-uid"))  # not the pod held: nothing left
    assert store.gone_since(NS, "mnist") is None
    store.remove(NS, pod("mnist-worker-0", "u1"))
    clock.now += 2
    assert store.gone_since(NS, "mnist") == 2
    store.upsert(NS, pod("mnist-worker-1", "u2"))
    clock.now += 1
    store.replace(NS, [])  # a relist without it: it left too
    assert store.gone_since(NS, "mnist") == 0
    store.forget(NS, "mnist")
    assert store.gone_since(NS, "mnist") is None
