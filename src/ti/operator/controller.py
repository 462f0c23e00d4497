"""The operator's I/O: read a job and its pods fresh from the API server, ask
`ti.operator.reconcile.plan` what to do, apply it. kopf's handlers in operator/handlers.py only call
`Controller.enqueue`.

Requeues (a scheduling deadline, pods still terminating, a TTL) run from one scheduler thread instead
of kopf timers: timers would put a finalizer on every job, two more writes per job for nothing.

No reconcile fails silently: one that raises is retried with exponential backoff per job
(`ItemBackoff`), counted in ti_reconcile_errors_total{error=<class>}, and shown on the job as a
Warning Event (ReconcileError) naming the error class and what the API server said, once per distinct
error. Its message never holds a request, a header or a response body: only status, reason and the
server's own message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ti import contract
from ti.api import API_VERSION, KIND, PLURAL, ObjectMeta, TFTrainingJob
from ti.catalog import Catalog
from ti.operator import metrics
from ti.operator.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS
from ti.operator.plans import Event, Plan
from ti.operator.reconcile import plan
from ti.operator.refusals import describe, refused, unparsable
from ti.operator.settings import OperatorConfig
from ti.operator.workqueue import ItemBackoff, Key, Scheduler, WorkQueue
from ti.reasons import EventReason

GROUP, VERSION = API_VERSION.split("/")
log = logging.getLogger("ti.operator.controller")

# Creations the API server refuses for good until something changes (admission, quota, validation).
_REFUSED = (400, 403, 422)


_ERROR_MESSAGE_LIMIT = 1024


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def error_message(err: BaseException) -> str:
    """What a user may read of a reconcile's error: its class and, for the API server's refusals, the
    status, reason and the server's own message. Never str(ApiException): that holds the response's
    headers and body."""
    kind = type(err).__name__
    if isinstance(err, ApiException):
        said = f"{kind}: {err.status} {err.reason}"
        try:
            server = json.loads(err.body or "")["message"]
        except (TypeError, ValueError, KeyError):
            server = None
        text = f"{said}: {server}" if isinstance(server, str) and server else said
    else:
        text = f"{kind}: {err}" if str(err) else kind
    return text if len(text) <= _ERROR_MESSAGE_LIMIT else text[: _ERROR_MESSAGE_LIMIT - 1] + "…"


@dataclass
class Controller:
    """Reconciles TFTrainingJobs against the API server; thread-safe, one lock per job."""

    api: client.ApiClient
    catalog: Catalog
    config: OperatorConfig
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _scheduler: Scheduler | None = None
    _queue: WorkQueue | None = None
    backoff: ItemBackoff = field(default_factory=ItemBackoff)
    _errors: dict[Key, str] = field(default_factory=dict)  # the last error reported per job
    _seen: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)  # uid, resourceVersion

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # -- entry points ----------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Plan | None:
        """Bring one job one step closer to what its spec asks; returns the plan it applied (None when
        the job is gone). Event handlers call `enqueue` instead, which coalesces and runs this."""
        with self._lock((namespace, name)), RECONCILE_SECONDS.time():
            body = self._get_job(namespace, name)
            if body is None:
                self.forget(namespace, name)
                return None
            meta = body.get("metadata") or {}
            self._seen[(namespace, name)] = (meta.get("uid"), meta.get("resourceVersion"))
            try:
                job = TFTrainingJob.from_body(body)
            except ValidationError as err:
                # Stored by the API server, refused by the model: fail it, never retry a traceback. The
                # plan only patches status and records an event, so a stand-in with metadata suffices.
                meta = ObjectMeta.model_validate(body["metadata"])
                stand_in = TFTrainingJob.model_construct(metadata=meta)  # type: ignore[call-arg]
                return self._apply(stand_in, unparsable(body, describe(err), self.clock()))
            pods = self.core.list_namespaced_pod(namespace, label_selector=f"{contract.LABEL_JOB}={name}")
            pod_dicts = [self.api.sanitize_for_serialization(p) for p in pods.items]
            service = self._get_service(namespace, name) if job.spec.distributed else None
            decided = plan(job, pod_dicts, service, self.clock(), self.catalog, self.config)
            decided = self._apply(job, decided)
        if decided.requeue_after is not None and self._scheduler is not None:
            self._scheduler.at(time.monotonic() + decided.requeue_after, (namespace, name))
        return decided

    def enqueue(self, namespace: str, name: str) -> None:
        """Ask for a reconcile of a job, from an event handler: returns at once. A job already queued is
        queued once (its reconcile reads whatever changed since), and never runs twice at a time, as in
        client-go's work queues. Without workers (`start_workers`) it reconciles in the caller."""
        if self._queue is None:
            self._requeued((namespace, name))
        else:
            self._queue.add((namespace, name))

    def start_workers(self, count: int) -> None:
        if self._queue is None:
            self._queue = WorkQueue()
            for i in range(max(1, count)):
                worker = threading.Thread(target=self._work, args=(self._queue,), name=f"ti-worker-{i}")
                worker.daemon = True
                worker.start()

    def stop_workers(self) -> None:
        if self._queue is not None:
            self._queue.shut_down()
            self._queue = None

    def _work(self, queue: WorkQueue) -> None:
        while (key := queue.get()) is not None:
            try:
                self._requeued(key)
            finally:
                queue.done(key)

    def start_scheduler(self) -> None:
        if self._scheduler is None:
            self._scheduler = Scheduler(lambda key: self.enqueue(*key))
            self._scheduler.start()

    def stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None

    def watch(self, namespace: str, name: str) -> None:
        """Remember a job for the periodic resync (drift: anything a watch event might have missed)."""
        if self._scheduler is not None:
            self._scheduler.resync(
                (namespace, name), time.monotonic() + self.config.resync_seconds, self.config.resync_seconds
            )

    def forget(self, namespace: str, name: str) -> None:
        if self._scheduler is not None:
            self._scheduler.drop((namespace, name))
        with self._locks_guard:
            self._locks.pop((namespace, name), None)
            self._errors.pop((namespace, name), None)
            self._seen.pop((namespace, name), None)
        self.backoff.succeeded((namespace, name))

    # -- applying a plan, in the order reconcile.plan documents ---------------------------------------

    def _apply(self, job: TFTrainingJob, p: Plan) -> Plan:
        """Apply `p`; returns the plan applied in the end (another when the API server refused pods)."""
        ns, name = job.namespace, job.name
        try:
            if p.create_service is not None:
                self._ignore(409, self.core.create_namespaced_service, ns, p.create_service)
            for pod in p.create_pods:
                # A conflict means the pod exists already (an earlier run created it): names are deterministic.
                self._ignore(409, self.core.create_namespaced_pod, ns, pod)
        except ApiException as err:
            if err.status not in _REFUSED:
                raise
            # The status that says the pods exist must not be written: the job waits, saying why.
            message = _api_message(err)
            log.warning("the API server refused the pods of %s/%s: %s", ns, name, message)
            p = refused(job, message, self.clock(), self.config)
        if p.status_patch is not None:
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, name, {"status": p.status_patch}
                )
            except ApiException as err:
                if err.status != 404:
                    raise
        # Deletions come after the status that explains them: an operator killed in between finds the
        # retry (restartCount + 1) recorded and the old pods outdated. Deleting first could leave a job
        # whose status never said its pods existed, and their instances would be created again.
        for d in p.delete_pods:
            self._ignore(
                404, self.core.delete_namespaced_pod, d.name, ns, grace_period_seconds=d.grace_period_seconds
            )
        for e in p.events:
            self._event(job, e)
            metrics.count(e)
        if p.delete_job:
            self._ignore(
                404,
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                PLURAL,
                name,
                propagation_policy="Background",
            )
        return p

    def _event(self, job: TFTrainingJob, e: Event) -> None:
        self._record(job.namespace, job.name, job.metadata.uid, job.metadata.resource_version, e)

    def _record(self, namespace: str, name: str, uid: str | None, version: str | None, e: Event) -> None:
        now = self.clock()
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION,
                kind=KIND,
                name=name,
                namespace=namespace,
                uid=uid,
                resource_version=version,
            ),
            reason=e.reason,
            message=e.message[:1024],
            type=e.type,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="ti-operator"),
            reporting_component="ti-operator",
            reporting_instance="ti-operator",
        )
        try:
            self.core.create_namespaced_event(namespace, event)
        except ApiException as err:  # an event lost is not worth a failed reconcile
            log.warning("could not record event %s on %s/%s: %s", e.reason, namespace, name, err.reason)

    # -- reads -------------------------------------------------------------------------------------

    def _get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return dict(body)  # type: ignore[call-overload]
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            svc = self.core.read_namespaced_service(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        found: dict[str, Any] = self.api.sanitize_for_serialization(svc)
        return found

    @staticmethod
    def _ignore(status: int, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except ApiException as err:
            if err.status != status:
                raise

    def _lock(self, key: Key) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _requeued(self, key: Key) -> None:
        try:
            self.reconcile(*key)
        except Exception as err:
            self._failed(key, err)
        else:
            self.backoff.succeeded(key)
            with self._locks_guard:
                self._errors.pop(key, None)

    def _failed(self, key: Key, err: Exception) -> None:
        """Retry a reconcile that raised after its backoff, count it, and tell the job's owner once."""
        delay = self.backoff.failed(key)
        said = error_message(err)
        RECONCILE_ERRORS.labels(error=type(err).__name__).inc()
        if self._scheduler is not None:
            self._scheduler.at(time.monotonic() + delay, key)
        if isinstance(err, ApiException):  # the server's refusal; its traceback says nothing more
            log.warning("reconcile of %s/%s failed, retrying in %gs: %s", *key, delay, said)
        else:  # a bug: the traceback is what finds it
            log.error("reconcile of %s/%s failed, retrying in %gs: %s", *key, delay, said, exc_info=err)
        with self._locks_guard:
            if self._errors.get(key) == said:
                return
            self._errors[key] = said
            uid, version = self._seen.get(key, (None, None))
        event = Event(
            "Warning",
            EventReason.RECONCILE_ERROR,
            f"{said} (retrying in {delay:g}s, backing off to {self.backoff.cap:g}s)",
        )
        try:
            self._record(*key, uid, version, event)
        except Exception as lost:  # the retry above still runs; only the telling is lost
            log.warning("could not record the error of %s/%s: %s", *key, error_message(lost))
