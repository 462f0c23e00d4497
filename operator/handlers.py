"""kopf entry file: `kopf run operator/handlers.py`. Registration only; the logic lives in `ti`.

kopf watches TFTrainingJobs only: each event's raw body goes into the controller's job cache and the job
is enqueued for the same idempotent `ti.operator.controller.Controller.reconcile`. Pods and Services are
watched by the controller itself (`ti.operator.cache.Informer`), with a server-side label selector:
kopf filters labels on the client side, so it would receive and decode every pod of the namespace.
The controller's own scheduler handles requeues and drift.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as kube_config
from prometheus_client import start_http_server

from ti.api import PLURAL
from ti.catalog import CatalogError, load_catalog
from ti.operator import ratelimit
from ti.operator.controller import GROUP, VERSION, Controller
from ti.operator.settings import Settings, SettingsError

M_ARENA_MAX = -8  # glibc's mallopt parameter


def _cap_malloc_arenas(arenas: int = 2) -> None:
    # glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory freed
    # in one stays in the process's RSS: the watch threads decode every event in their own. Two arenas
    # keep the operator's RSS with the jobs it knows, not with its thread count (MALLOC_ARENA_MAX=2).
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to cap
            ctypes.CDLL(name).mallopt(M_ARENA_MAX, arenas)


_cap_malloc_arenas()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations; the schema'd status would be pruned by the API server.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # The controller records the Events a user needs; kopf's per-handler events would only add writes.
    settings.posting.enabled = False
    try:
        ours = Settings.from_env()
        catalog = load_catalog(ours.catalog_file)
    except (SettingsError, CatalogError) as err:
        # Permanent: kopf stops at once with this message instead of retrying a typo forever.
        raise kopf.PermanentError(str(err)) from None
    settings.execution.max_workers = ours.workers
    settings.watching.server_timeout = 300

    api = ratelimit.limit(_api_client(), ratelimit.bucket(ours.qps, ours.client_burst))
    controller = Controller(api=api, catalog=catalog, config=ours.config)
    # Handlers only enqueue; these threads reconcile, one job at a time each, bursts coalesced.
    controller.start_workers(ours.reconcile_threads)
    if ours.qps > 0:
        controller.start_event_sink()
    controller.start_scheduler()
    memo["controller"] = controller

    if ours.metrics_port and not memo.get("metrics_started"):
        start_http_server(ours.metrics_port)
        memo["metrics_started"] = True


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        controller.stop_scheduler()
        controller.stop_workers()
        controller.stop_event_sink()
        controller.stop_informers()


# Async and instant: each event's body is dropped at once, instead of waiting with every other event's
# for a thread of kopf's executor (memory then grew with the backlog of events, not with the jobs).
@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["controller"].job_event(event.get("type"), event["object"])


def _api_client() -> client.ApiClient:
    try:
        kube_config.load_incluster_config()
        api = client.ApiClient()
    except kube_config.ConfigException:
        api = kube_config.new_client_from_config()
    return api


logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
