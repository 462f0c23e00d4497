"""The controller on a stale cache, with a recording stand-in for the API server (unit tier: the
integration tier runs the same paths on a real one, tests/integration/test_faults.py).

Each test starts from the cache's state and checks the requests the controller sends: none while its
own creates are not in the cache, a fresh list once that waited too long, uid preconditions on deletes,
the resourceVersion on the status patch and no deletes after it met a newer job, and a create that
meets someone else's pod leaving the job waiting instead of taking the pod.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.unit.jobs import at, body
from ti import contract
from ti.api import ConditionType
from ti.catalog import default_catalog
from ti.operator import cache
from ti.operator.controller import Controller
from ti.operator.settings import OperatorConfig

pytestmark = pytest.mark.unit

NS, NAME = "team-a", "mnist"


class Raw:
    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj).encode()


def conflict(reason: str = "Conflict") -> ApiException:
    err = ApiException(status=409, reason=reason)
    err.body = json.dumps({"message": reason})
    return err


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pods: dict[str, dict[str, Any]] = {}  # what the API server has
        self.delete_error: ApiException | None = None

    def create_namespaced_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        self.calls.append(("create", pod["metadata"]["name"]))
        if pod["metadata"]["name"] in self.pods:
            raise conflict("AlreadyExists")
        self.pods[pod["metadata"]["name"]] = pod

    def create_namespaced_service(self, namespace: str, svc: dict[str, Any]) -> None:
        self.calls.append(("create-service", svc["metadata"]["name"]))

    def delete_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("delete", (name, (body.get("preconditions") or {}).get("uid"))))
        if self.delete_error is not None:
            raise self.delete_error

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> Raw:
        self.calls.append(("list", kw["label_selector"]))
        return Raw({"metadata": {"resourceVersion": "1"}, "items": list(self.pods.values())})

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Raw:
        self.calls.append(("get", name))
        return Raw(self.pods[name])

    def create_namespaced_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.calls.append(("event", event["reason"]))


class FakeCustom:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.error: ApiException | None = None
        self.job: dict[str, Any] = {}

    def patch_namespaced_custom_object_status(self, *args: Any) -> dict[str, Any]:
        self.patches.append(args[-1])
        if self.error is not None:
            raise self.error
        self.job = copy.deepcopy(self.job)
        self.job["status"] = {**(self.job.get("status") or {}), **args[-1]["status"]}
        self.job["metadata"]["resourceVersion"] = str(int(self.job["metadata"]["resourceVersion"]) + 1)
        return self.job


@pytest.fixture
def ctl() -> Controller:
    c = Controller(
        api=client.ApiClient(), catalog=default_catalog(), config=OperatorConfig(), clock=lambda: at(0)
    )
    c.core, c.custom = FakeCore(), FakeCustom()  # type: ignore[assignment]
    c._informers[NS] = []  # the namespace's watches "have listed": the test fills the caches itself
    job = body(instanceCount=2)
    job["metadata"]["resourceVersion"] = "7"
    c.custom.job = job  # type: ignore[attr-defined]
    c.jobs.put(job)
    return c


def server_pods(c: Controller) -> dict[str, dict[str, Any]]:
    return c.core.pods  # type: ignore[attr-defined, no-any-return]


def calls(c: Controller) -> list[tuple[str, Any]]:
    return c.core.calls  # type: ignore[attr-defined, no-any-return]


def cache_shows(c: Controller, *names: str) -> None:
    for n in names:
        pod = copy.deepcopy(server_pods(c)[n])
        pod["metadata"]["uid"] = f"uid-{n}"
        server_pods(c)[n] = pod
        c.pods.upsert(NS, pod)


def test_after_its_creates_a_reconcile_waits_for_the_cache_to_show_the_pods(ctl: Controller) -> None:
    first = ctl.reconcile(NS, NAME)
    assert first is not None and len(first.create_pods) == 2
    patch = ctl.custom.patches[0]  # type: ignore[attr-defined]
    assert patch["metadata"] == {"resourceVersion": "7"} and patch["status"]["phase"] == "Starting"
    # The job as our write returned it; the pods' watch events have not come: no second decision.
    assert ctl.jobs.get(NS, NAME)["status"]["phase"] == "Starting"  # type: ignore[index]
    calls(ctl).clear()
    waiting = ctl.reconcile(NS, NAME)
    assert waiting is not None and waiting.idle and waiting.requeue_after is not None
    assert calls(ctl) == [] and len(ctl.custom.patches) == 1  # type: ignore[attr-defined]
    cache_shows(ctl, "mnist-worker-0", "mnist-worker-1")
    assert ctl.reconcile(NS, NAME) is not None
    assert [c for c in calls(ctl) if c[0] in ("create", "delete", "list")] == []


def test_expectations_not_met_in_time_are_settled_by_one_fresh_list(
    ctl: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl.reconcile(NS, NAME)
    calls(ctl).clear()
    monkeypatch.setattr(cache, "EXPECTATION_TIMEOUT_SECONDS", 0.0)
    monkeypatch.setattr("ti.operator.controller.EXPECTATION_TIMEOUT_SECONDS", 0.0)
    ctl.reconcile(NS, NAME)
    assert calls(ctl)[0] == ("list", f"{contract.LABEL_JOB}={NAME}")
    assert not [c for c in calls(ctl) if c[0] in ("create", "delete")]


def test_deletes_carry_the_uid_the_plan_saw_and_a_changed_pod_is_left_alone(ctl: Controller) -> None:
    ctl.reconcile(NS, NAME)
    cache_shows(ctl, "mnist-worker-0", "mnist-worker-1")
    job = copy.deepcopy(ctl.jobs.get(NS, NAME))
    assert job is not None
    job["spec"]["runPolicy"] = {"suspend": True}
    job["metadata"]["resourceVersion"] = "99"
    ctl.jobs.put(job)
    ctl.custom.job = job  # type: ignore[attr-defined]
    ctl.core.delete_error = conflict("Precondition failed: UID in precondition")  # type: ignore[attr-defined]
    calls(ctl).clear()
    ctl.reconcile(NS, NAME)  # a 409 on a delete: someone's pod of the same name; no error
    deletes = [c[1] for c in calls(ctl) if c[0] == "delete"]
    assert deletes == [("mnist-worker-0", "uid-mnist-worker-0"), ("mnist-worker-1", "uid-mnist-worker-1")]


def test_a_status_write_that_meets_a_newer_job_deletes_nothing_and_comes_back(ctl: Controller) -> None:
    ctl.reconcile(NS, NAME)
    cache_shows(ctl, "mnist-worker-0", "mnist-worker-1")
    job = copy.deepcopy(ctl.jobs.get(NS, NAME))
    assert job is not None
    job["spec"]["runPolicy"] = {"suspend": True}
    job["metadata"]["resourceVersion"] = "99"
    ctl.jobs.put(job)
    ctl.custom.error = conflict()  # type: ignore[attr-defined]
    calls(ctl).clear()
    applied = ctl.reconcile(NS, NAME)
    assert applied is not None and applied.requeue_after is not None and applied.requeue_after <= 1.0
    assert ctl.custom.patches[-1]["metadata"] == {"resourceVersion": "99"}  # type: ignore[attr-defined]
    assert [c for c in calls(ctl) if c[0] in ("delete", "event")] == []


def test_pods_created_before_a_status_write_that_meets_a_newer_job_still_get_their_event(
    ctl: Controller,
) -> None:
    ctl.custom.error = conflict()  # type: ignore[attr-defined]
    applied = ctl.reconcile(NS, NAME)
    assert applied is not None and applied.requeue_after is not None
    assert [c for c in calls(ctl) if c[0] == "create"] == [
        ("create", "mnist-worker-0"),
        ("create", "mnist-worker-1"),
    ]
    # The next plan finds the pods there and never says they were created: the Event is recorded now.
    assert [c for c in calls(ctl) if c[0] == "event"] == [("event", "Created")]


def test_a_create_that_meets_someone_elses_pod_waits_saying_whose_it_is(ctl: Controller) -> None:
    server_pods(ctl)["mnist-worker-1"] = {
        "metadata": {"name": "mnist-worker-1", "uid": "theirs", "labels": {"app": "other"}},
        "spec": {},
    }
    applied = ctl.reconcile(NS, NAME)
    assert ("get", "mnist-worker-1") in calls(ctl)
    assert applied is not None and applied.status is not None
    assert applied.status.reason == "FailedCreate"
    created = applied.status.condition(ConditionType.CREATED)
    assert created is not None and "mnist-worker-1" in (created.message or "")
    assert "not a pod of any TFTrainingJob" in (created.message or "")
    assert [e.reason for e in applied.events] == ["FailedCreate"]
    # The job waits for worker-0's event before its next decision; worker-1 was never expected.
    cache_shows(ctl, "mnist-worker-0")
    assert ctl.expectations.unmet((NS, NAME), ctl.pods.of(NS, NAME)) is None


def test_no_pod_is_created_under_a_name_its_previous_holder_left_moments_ago(ctl: Controller) -> None:
    old = {"metadata": {"name": "mnist-worker-0", "uid": "gone", "labels": {contract.LABEL_JOB: NAME}}}
    ctl.pods.upsert(NS, old)
    ctl.pods.remove(NS, old)  # a pod of a job of the same name, just gone
    held = ctl.reconcile(NS, NAME)
    assert held is not None and held.idle and held.requeue_after is not None and held.requeue_after > 0
    assert calls(ctl) == [] and ctl.custom.patches == []  # type: ignore[attr-defined]


def test_a_finished_job_is_not_resynced_and_a_running_one_is(ctl: Controller) -> None:
    ctl.start_scheduler()
    try:
        scheduler = ctl._scheduler
        assert scheduler is not None
        running = copy.deepcopy(ctl.jobs.get(NS, NAME))
        assert running is not None
        ctl.job_event("MODIFIED", running)
        assert (NS, NAME) in scheduler._periods
        finished = copy.deepcopy(running)
        finished["status"] = {"phase": "Completed"}
        finished["metadata"]["resourceVersion"] = "50"
        ctl.job_event("MODIFIED", finished)
        assert (NS, NAME) not in scheduler._periods
        ctl.job_event("DELETED", finished)
        assert ctl.jobs.get(NS, NAME) is None
    finally:
        ctl.stop_scheduler()
