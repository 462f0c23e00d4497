"""kopf entry file: `kopf run operator/handlers.py`. Registration only; the logic lives in `ti`.

Every job event and every event of a job's pods leads to the same idempotent
`ti.operator.controller.Controller.reconcile`; the controller's own scheduler handles requeues and drift.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as kube_config
from prometheus_client import start_http_server

from ti import contract
from ti.api import PLURAL
from ti.catalog import load_catalog
from ti.operator import ratelimit
from ti.operator.controller import GROUP, VERSION, Controller
from ti.operator.settings import OperatorConfig

METRICS_PORT_ENV = "TI_OPERATOR_METRICS_PORT"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations; the schema'd status would be pruned by the API server.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # The controller records the Events a user needs; kopf's per-handler events would only add writes.
    settings.posting.enabled = False
    settings.execution.max_workers = int(os.environ.get("TI_OPERATOR_WORKERS", "8"))
    settings.watching.server_timeout = 300

    controller = Controller(
        api=_api_client(),
        catalog=load_catalog(),
        config=OperatorConfig.from_env(),
    )
    # Handlers only enqueue; these threads reconcile, one job at a time each, bursts coalesced.
    controller.start_workers(int(os.environ.get("TI_OPERATOR_WORKERS", "8")))
    controller.start_scheduler()
    memo["controller"] = controller

    port = int(os.environ.get(METRICS_PORT_ENV, "9090"))
    if port and not memo.get("metrics_started"):
        start_http_server(port)
        memo["metrics_started"] = True


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        controller.stop_scheduler()
        controller.stop_workers()


# Async and instant: each event's body is dropped at once, instead of waiting with every other event's
# for a thread of kopf's executor (memory then grew with the backlog of events, not with the jobs).
@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_changed(event: kopf.RawEvent, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    controller: Controller = memo["controller"]
    namespace = namespace or ""
    if event.get("type") == "DELETED":
        controller.forget(namespace, name)
        return
    controller.watch(namespace, name)
    controller.enqueue(namespace, name)


@kopf.on.event("", "v1", "pods", labels={contract.LABEL_JOB: kopf.PRESENT})
async def pod_changed(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    memo["controller"].enqueue(namespace or "", labels[contract.LABEL_JOB])


def _api_client() -> client.ApiClient:
    try:
        kube_config.load_incluster_config()
        api = client.ApiClient()
    except kube_config.ConfigException:
        api = kube_config.new_client_from_config()
    # TI_OPERATOR_QPS / TI_OPERATOR_BURST: a client-side rate limit, off unless set.
    return ratelimit.limit(api, ratelimit.from_env())


logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
