"""The operator under a tight client rate limit (TI_OPERATOR_QPS): requests are served by priority, pod
creates first and Events last (ti.operator.ratelimit), and nothing is lost on the way."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.jobs import apply, events, eventually, job_manifest, phase_is, pods, running_pods
from tests.support.operator import Kubelet

pytestmark = pytest.mark.integration

JOBS = [f"limited-{i}" for i in range(6)]


def test_a_burst_at_three_requests_a_second_creates_every_pod_first_and_loses_nothing(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    op = start_operator(TI_OPERATOR_QPS="3", TI_OPERATOR_BURST="3", TI_RESYNC_SECONDS="30")
    with ThreadPoolExecutor(len(JOBS)) as pool:
        list(
            pool.map(
                lambda n: apply(
                    control_plane, namespace, job_manifest(n, instanceType="TI.S.LARGE.POST", instanceCount=2)
                ),
                JOBS,
            )
        )
    for name in JOBS:
        eventually(running_pods(control_plane, namespace, name, 2), f"{name}'s 2 pods", timeout=120)
    created = eventually(
        lambda: (found if len(found := [e for n in JOBS for e in events(control_plane, namespace, n)
                                       if e["reason"] == "Created"]) == len(JOBS) else None),
        "a Created Event for every job", timeout=120,
    )  # fmt: skip
    # At 3 requests a second, 12 pod creates take 3 s past the burst: had Events or statuses gone
    # first, the last pods would have come seconds after the first Event.
    last_pod = max(
        p["metadata"]["creationTimestamp"] for n in JOBS for p in pods(control_plane, namespace, n)
    )
    first_event = min(e["metadata"]["creationTimestamp"] for e in created)
    assert last_pod <= first_event, (last_pod, first_event)

    for name in JOBS:
        for p in pods(control_plane, namespace, name):
            kubelet.finish(p["metadata"]["name"], exit_code=0)
    for name in JOBS:
        status = eventually(phase_is(control_plane, namespace, name, "Completed"), f"{name} Completed", 120)
        assert status["restartCount"] == 0
        assert len(pods(control_plane, namespace, name)) == 2, "one pod per instance, never a second"
    eventually(
        lambda: all("Completed" in [e["reason"] for e in events(control_plane, namespace, n)] for n in JOBS),
        "a Completed Event for every job",
        timeout=120,
    )
    assert op.alive()
    log = op.log.read_text(errors="replace")
    assert "Traceback" not in log and "ReconcileError" not in log
