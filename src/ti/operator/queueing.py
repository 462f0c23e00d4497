"""The operator's I/O with Kueue: what it reads of a queued job's Workload, the ResourceFlavors and
WorkloadPriorityClasses, and its writes to the Workload. The decisions are `ti.operator.kueue`'s.

Workloads are read from a watch cache like pods (`ti.operator.cache.Informer`, our job label as a
server-side selector); flavors and priority classes are few, cluster-wide and rarely change, so they
are listed or read when a decision needs them and kept a little while. Whether Kueue is installed at
all is asked the same way (its API answers a list, or 404), so a cluster without Kueue costs nothing
until a job names a queue, and installing Kueue later needs no operator restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ti.api import TFTrainingJob
from ti.operator import kueue
from ti.operator.cache import Informer, Key, ObjectStore, slim
from ti.operator.plans import Plan

log = logging.getLogger("ti.operator.queueing")

# How long what was read of Kueue's cluster-wide objects (is it served, its flavors, a priority class)
# is trusted before it is read again.
KEEP_SECONDS = 30.0


class Queues:
    """Kueue as the controller sees it; thread-safe."""

    def __init__(self, api: client.ApiClient, on_change: Callable[[Key], None]) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.workloads = ObjectStore()
        self._on_change = on_change
        self._informers: dict[str, Informer] = {}
        self._lock = threading.Lock()
        self._flavors: tuple[float, dict[str, dict[str, Any]] | None] = (-KEEP_SECONDS, None)
        self._priorities: dict[str, tuple[float, int]] = {}

    def state(self, job: TFTrainingJob) -> kueue.QueueState:
        """What the planner needs of a queued job: is Kueue there, the job's Workload, the flavors (when
        admitted) and its priority (before its Workload exists)."""
        flavors = self.flavors()
        if flavors is None:
            return kueue.QueueState(available=False)
        self.watch(job.namespace).wait_synced()
        name = kueue.workload_name(job)
        held = next(
            (w for w in self.workloads.of(job.namespace, job.name) if w["metadata"]["name"] == name), None
        )
        priority, missing = None, None
        if held is None:  # the priority is the Workload's to keep once it exists
            priority = self.priority(job)
            named = job.metadata.labels.get(kueue.PRIORITY_LABEL)
            missing = named if named and priority is None else None
        return kueue.QueueState(
            workload=held, flavors=flavors, priority=priority, missing_priority_class=missing
        )

    def watch(self, namespace: str) -> Informer:
        with self._lock:
            informer = self._informers.get(namespace)
            if informer is None:
                informer = self._informers[namespace] = Informer(
                    self.list_workloads, namespace, self.workloads, self._on_change
                )
                informer.start()
        return informer

    def list_workloads(self, namespace: str, **kwargs: Any) -> Any:
        return self.custom.list_namespaced_custom_object(
            kueue.GROUP, kueue.VERSION, namespace, kueue.WORKLOADS, **kwargs
        )

    def stop(self) -> None:
        with self._lock:
            informers, self._informers = list(self._informers.values()), {}
        for informer in informers:
            informer.stop()

    def flavors(self) -> dict[str, dict[str, Any]] | None:
        """ResourceFlavors by name; None when the API server does not serve Kueue's API."""
        at, known = self._flavors
        if time.monotonic() - at < KEEP_SECONDS:
            return known
        try:
            response: Any = self.custom.list_cluster_custom_object(
                kueue.GROUP, kueue.VERSION, kueue.RESOURCE_FLAVORS, _preload_content=False
            )
            items = json.loads(response.data).get("items") or []
            known = {f["metadata"]["name"]: f for f in items}
        except ApiException as err:
            if err.status != 404:
                raise
            known = None
        self._flavors = (time.monotonic(), known)
        return known

    def priority(self, job: TFTrainingJob) -> int | None:
        """The value of the WorkloadPriorityClass the job's label names (None: no label, no class).
        Only a class found is kept: one the job waits for is looked for again at its next reconcile."""
        name = job.metadata.labels.get(kueue.PRIORITY_LABEL)
        if not name:
            return None
        kept = self._priorities.get(name)
        if kept is not None and time.monotonic() - kept[0] < KEEP_SECONDS:
            return kept[1]
        try:
            found: Any = self.custom.get_cluster_custom_object(
                kueue.GROUP, kueue.VERSION, kueue.PRIORITY_CLASSES, name
            )
        except ApiException as err:
            if err.status != 404:
                raise
            return None
        value = int(found.get("value") or 0)
        self._priorities[name] = (time.monotonic(), value)
        return value

    # -- writes, in the order the plan's other steps leave for them ---------------------------------

    def write(self, job: TFTrainingJob, p: Plan) -> None:
        """Create the Workload, or patch it ((de)activate it): before the pods and the job's status."""
        if p.create_workload is not None:
            try:
                self.custom.create_namespaced_custom_object(
                    kueue.GROUP, kueue.VERSION, job.namespace, kueue.WORKLOADS, p.create_workload
                )
            except ApiException as err:
                if err.status != 409:  # created by an earlier reconcile; the cache will show it
                    raise
        if p.workload_patch is not None and p.workload is not None:
            try:
                written: Any = self.custom.patch_namespaced_custom_object(
                    kueue.GROUP,
                    kueue.VERSION,
                    job.namespace,
                    kueue.WORKLOADS,
                    p.workload[0],
                    p.workload_patch,
                )
            except ApiException as err:
                if err.status != 404:  # gone: the job's next reconcile makes another if it needs one
                    raise
                return
            self.workloads.upsert(job.namespace, slim(written))

    def write_status(self, job: TFTrainingJob, p: Plan) -> bool:
        """Patch the Workload's status; False when Kueue changed it meanwhile (plan again)."""
        if p.workload_status is None or p.workload is None:
            return True
        name, version = p.workload
        # The resourceVersion it was computed from: a merge patch replaces the conditions list whole, so
        # one computed from an older Workload would drop what Kueue wrote since.
        body = {"metadata": {"resourceVersion": version}, "status": p.workload_status}
        try:
            written: Any = self.custom.patch_namespaced_custom_object_status(
                kueue.GROUP, kueue.VERSION, job.namespace, kueue.WORKLOADS, name, body
            )
        except ApiException as err:
            if err.status == 404:
                return True
            if err.status == 409:
                return False
            raise
        self.workloads.upsert(job.namespace, slim(written))
        return True
