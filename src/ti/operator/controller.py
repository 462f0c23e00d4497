"""The operator's I/O: read a job, its pods and Service from the watch caches (`ti.operator.cache`),
ask `ti.operator.reconcile.plan` what to do, apply it. kopf's handlers in operator/handlers.py only
feed the job cache (`Controller.job_event`) and enqueue.

A reconcile makes no read request of its own, except where the cache cannot be trusted: expectations
of our own creates and deletes not met in time, a create that meets a pod the cache did not show, a
pod of ours without an owner, and the decisions a lagging cache could make wrongly (a retry, a
failure). Every write is guarded against the cache being stale: pod and job deletes carry the uid they
were decided for, the status patch carries the resourceVersion it was computed from.

Requeues (a scheduling deadline, pods still terminating, a TTL) run from one scheduler thread instead
of kopf timers: timers would put a finalizer on every job, two more writes per job for nothing.

No reconcile fails silently: one that raises is retried with exponential backoff per job
(`ItemBackoff`), counted in ti_reconcile_errors_total{error=<class>}, and shown on the job as a
Warning Event (ReconcileError) naming the error class and what the API server said, once per distinct
error. Its message never holds a request, a header or a response body: only status, reason and the
server's own message.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ti.api import API_VERSION, PLURAL, ObjectMeta, Phase, TFTrainingJob
from ti.catalog import Catalog
from ti.operator import kueue, metrics, rawapi
from ti.operator.cache import (
    EXPECTATION_TIMEOUT_SECONDS,
    Expectations,
    Informer,
    JobStore,
    ObjectStore,
    controller_uid,
    describe_owner,
    fresh_pod,
    fresh_pods,
    same_attempt,
    summary,
    unowned,
)
from ti.operator.events import EventSink, api_message, error_message, event_object
from ti.operator.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS
from ti.operator.plans import WAIT_SECONDS, Event, Plan
from ti.operator.queueing import Queues
from ti.operator.ratelimit import LOW, NORMAL, URGENT, GaveWay, giving_way, priority
from ti.operator.reconcile import plan
from ti.operator.refusals import describe, refused, unparsable
from ti.operator.settings import OperatorConfig
from ti.operator.workqueue import ItemBackoff, Key, Scheduler, WorkQueue
from ti.reasons import EventReason

GROUP, VERSION = API_VERSION.split("/")
log = logging.getLogger("ti.operator.controller")

# Creations the API server refuses for good until something changes (admission, quota, validation).
_REFUSED = (400, 403, 422)
# How soon a reconcile whose status write met a newer job (409) runs again; the newer job's own watch
# event usually wakes it first.
CONFLICT_RETRY_SECONDS = 1.0
# No pod is created under a name whose previous holder left less than this long ago. A node agent
# still finishing the old pod may act on it by name: kwok replays an old pod's deletion by name, 5-7 s
# late on a loaded machine (measured in the fault suite), and so deleted the new pod of that name (a
# kubelet deletes with the old pod's uid). Before the caches, each reconcile's reads left about that
# much time; reading from the cache does not. Kubernetes' Job controller waits 10 s before it
# replaces a failed pod, too.
NAME_REUSE_SECONDS = 10.0
# Decisions that destroy work or end the job: a pod the cache has not seen yet would look deleted to
# them (after a restart the job list can be newer than the pod list), so they are confirmed on a
# fresh list first.
_CONFIRM = (EventReason.RESTARTING, EventReason.FAILED)


class _Taken(Exception):
    """A pod name we create is held by a pod that is not this attempt's (the cache did not show it)."""

    def __init__(self, message: str, ours: bool) -> None:
        super().__init__(message)
        self.ours = ours


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
    jobs: JobStore = field(default_factory=JobStore)
    pods: ObjectStore = field(default_factory=ObjectStore)
    services: ObjectStore = field(default_factory=ObjectStore)
    expectations: Expectations = field(default_factory=Expectations)
    _informers: dict[str, list[Informer]] = field(default_factory=dict)
    # Under a client rate limit, Events go through a sender of their own (`start_event_sink`).
    events: EventSink | None = None

    def __post_init__(self) -> None:
        self.core = rawapi.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.queues = Queues(self.api, self._changed)

    # -- entry points ----------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Plan | None:
        """Bring one job one step closer to what its spec asks; returns the plan it applied (None when
        the job is gone). Event handlers call `enqueue` instead, which coalesces and runs this."""
        key = (namespace, name)
        with self._lock(key), RECONCILE_SECONDS.time():
            self._synced(namespace)
            body = self.jobs.get(namespace, name)
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
                return self._apply(stand_in, unparsable(body, describe(err), self.clock()), [])
            pods, fresh = self.pods.of(namespace, name), False
            waited = self.expectations.unmet(key, pods)
            if waited is not None and waited < EXPECTATION_TIMEOUT_SECONDS:
                # Our own creates or deletes are not in the cache yet: deciding now would take a pod
                # we just created for a deleted one. Their watch events wake the job; this is the
                # deadline if none come.
                decided = Plan(requeue_after=EXPECTATION_TIMEOUT_SECONDS - waited)
            else:
                if waited is not None or any(unowned(p) for p in pods):
                    # Expectations not met in time (a broken watch), or a pod of ours nobody owns
                    # (made by hand, or left over): the cache cannot say what exists; the API server can.
                    pods, fresh = self._fresh_pods(namespace, name), True
                    self.expectations.forget(key)
                decided = self._plan(job, pods)
                if not fresh and any(e.reason in _CONFIRM for e in decided.events):
                    cached = summary(pods)
                    pods = self._fresh_pods(namespace, name)
                    decided = self._plan(job, pods)
                    log.info(
                        "%s/%s: %s, confirmed on a fresh list; the cache had %s, the API server has %s",
                        namespace, name, [e.reason for e in decided.events], cached, summary(pods),
                    )  # fmt: skip
                gone = self.pods.gone_since(namespace, name)
                if decided.create_pods and gone is not None and gone < NAME_REUSE_SECONDS:
                    decided = Plan(requeue_after=NAME_REUSE_SECONDS - gone)
                else:
                    decided = self._apply(job, decided, pods)
        if decided.requeue_after is not None and self._scheduler is not None:
            self._scheduler.at(time.monotonic() + decided.requeue_after, key)
        return decided

    def job_event(self, kind: str | None, body: Mapping[str, Any]) -> None:
        """A job's watch event (kopf's raw body): keep it, and reconcile it."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        if kind == "DELETED":
            self.jobs.delete(namespace, name, meta.get("uid"))
            self.expectations.forget((namespace, name))
            self.forget(namespace, name)
            return
        self.jobs.put(body)
        self.observe(namespace)
        try:
            finished = Phase((body.get("status") or {}).get("phase")).finished
        except ValueError:
            finished = False
        if finished:
            # A finished job changes only when a user changes it (its watch event says so) or its TTL
            # is due (a requeue): a periodic resync of every finished job would be work for nothing.
            if self._scheduler is not None:
                self._scheduler.drop((namespace, name))
        else:
            self.watch(namespace, name)
        self.enqueue(namespace, name)

    def observe(self, namespace: str) -> None:
        """Start the pod and Service watches of a namespace, once: on its first job, since kopf, not
        the controller, knows which namespaces it serves."""
        with self._locks_guard:
            if namespace in self._informers:
                return
            self._informers[namespace] = [
                Informer(self.core.list_namespaced_pod, namespace, self.pods, self._changed),
                Informer(self.core.list_namespaced_service, namespace, self.services, self._changed),
            ]
        for informer in self._informers[namespace]:
            informer.start()

    def stop_informers(self) -> None:
        with self._locks_guard:
            informers = [i for group in self._informers.values() for i in group]
            self._informers.clear()
        for informer in informers:
            informer.stop()
        self.queues.stop()

    def _changed(self, key: Key) -> None:
        if self.jobs.get(*key) is not None:
            self.enqueue(*key)

    def _synced(self, namespace: str) -> None:
        self.observe(namespace)
        for informer in self._informers[namespace]:
            informer.wait_synced()

    def _plan(self, job: TFTrainingJob, pods: list[dict[str, Any]]) -> Plan:
        ns, name = job.namespace, job.name
        service = None
        if job.spec.distributed:
            service = next((s for s in self.services.of(ns, name) if s["metadata"]["name"] == name), None)
        queue = self.queues.state(job) if kueue.queue_name(job) else None
        return plan(job, pods, service, self.clock(), self.catalog, self.config, queue)

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
                with giving_way(lambda: queue.dirty(key)):
                    self._requeued(key)
            finally:
                queue.done(key)

    def start_event_sink(self) -> None:
        if self.events is None:
            self.events = EventSink(self._send_event)
            self.events.start()

    def stop_event_sink(self) -> None:
        if self.events is not None:
            self.events.stop()
            self.events = None

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
        self.pods.forget(namespace, name)
        if self._scheduler is not None:
            self._scheduler.drop((namespace, name))
        with self._locks_guard:
            self._locks.pop((namespace, name), None)
            self._errors.pop((namespace, name), None)
            self._seen.pop((namespace, name), None)
        self.backoff.succeeded((namespace, name))

    # -- applying a plan, in the order reconcile.plan documents ---------------------------------------

    def _apply(self, job: TFTrainingJob, p: Plan, pods: list[dict[str, Any]]) -> Plan:
        """Apply `p`; returns the plan applied in the end (another when the API server refused pods,
        or a requeue when the status write met a newer job). `pods` is what `p` was decided on."""
        ns, name = job.namespace, job.name
        made = False
        try:
            self.queues.write(job, p)
            applied = p
            try:
                # Pods first: under a client rate limit their creates go before every other write
                # (they never give way), and the Service is needed only once the containers start.
                self._create_pods(job, p.create_pods)
                made = bool(p.create_pods)
                if p.create_service is not None:
                    self._ignore(409, self.core.create_namespaced_service, ns, p.create_service)
            except _Taken as err:
                log.warning("%s/%s: %s", ns, name, err)
                # Our own pod of another attempt: the cache lagged; look again once it has caught up.
                # Someone else's: the job waits, saying why, as for any pod the API server refuses.
                if err.ours:
                    return Plan(requeue_after=WAIT_SECONDS)
                applied = refused(job, str(err), self.clock(), self.config)
            except ApiException as err:
                if err.status not in _REFUSED:
                    raise
                # The status that says the pods exist must not be written: the job waits, saying why.
                message = api_message(err)
                log.warning("the API server refused the pods of %s/%s: %s", ns, name, message)
                applied = refused(job, message, self.clock(), self.config)
            return self._after_pods(job, applied, pods)
        except GaveWay:
            # Under a rate limit, a write still waiting for its token when the job changed again: the
            # newer reconcile (queued) starts over from what is true now. Pods created here exist
            # whatever the status says; the next plan finds them and would never say they were
            # created, so their Event is recorded now.
            log.info("%s/%s changed while a write waited for its turn; planning again", ns, name)
            if made:
                self._created_events(job, p)
            return Plan()

    def _created_events(self, job: TFTrainingJob, p: Plan) -> list[Event]:
        done = [e for e in p.events if e.reason == EventReason.CREATED] if p.create_pods else []
        for e in done:
            self._event(job, e)
        return done

    def _after_pods(self, job: TFTrainingJob, p: Plan, pods: list[dict[str, Any]]) -> Plan:
        """The steps after the pods and Service: the status, deletions, the Workload, events."""
        ns, name = job.namespace, job.name
        key = (ns, name)
        if p.status_patch is not None:
            # The resourceVersion the plan was computed from: if the job changed since (a user's
            # `kubectl patch`, a write the cache had not shown), the API server answers 409 instead of
            # letting a patch computed from an older status overwrite the newer one. The job is
            # then planned again from the newer version, and what remained of this plan (deletes,
            # events) waits for that plan, which comes after its status.
            body = {"metadata": {"resourceVersion": job.metadata.resource_version}, "status": p.status_patch}
            # A job's end is what its user waits for: it goes before other writes, as pod creates do.
            ending = p.status is not None and p.status.phase is not None and p.status.phase.finished
            try:
                with priority(URGENT if ending else NORMAL):
                    written = self.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, ns, PLURAL, name, body
                    )
            except ApiException as err:
                if err.status == 404:
                    return p
                if err.status != 409:
                    raise
                log.info("status of %s/%s changed meanwhile; planning again", ns, name)
                # The pods created above exist whatever the status says, and the next plan finds them
                # already there: it would never say they were created. Their Event is recorded now.
                done = self._created_events(job, p)
                return dataclasses.replace(
                    p, delete_pods=[], events=done, delete_job=False, requeue_after=CONFLICT_RETRY_SECONDS
                )
            self.jobs.put(written)  # type: ignore[arg-type]  # a dict: the client has no model for it
        # Deletions come after the status that explains them: an operator killed in between finds the
        # retry (restartCount + 1) recorded and the old pods outdated. Deleting first could leave a job
        # whose status never said its pods existed, and their instances would be created again.
        uids = {q["metadata"]["name"]: q["metadata"].get("uid") for q in pods}
        for d in p.delete_pods:
            log.info("%s/%s: deleting pod %s (uid %s): %s", ns, name, d.name, uids.get(d.name), d.reason)
            self._delete_pod(key, d.name, uids.get(d.name), d.grace_period_seconds)
        if not self.queues.write_status(job, p):
            log.info("the Workload of %s/%s changed meanwhile; planning again", ns, name)
            p = dataclasses.replace(p, delete_job=False, requeue_after=CONFLICT_RETRY_SECONDS)
        for e in p.events:
            self._event(job, e)
        if p.delete_job:
            # The uid: a job deleted and created again under the same name while the TTL of the
            # old one ran must not be deleted in its place.
            options = client.V1DeleteOptions(
                propagation_policy="Background", preconditions=client.V1Preconditions(uid=job.metadata.uid)
            )
            try:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body=options)
            except ApiException as err:
                if err.status not in (404, 409):  # gone, or another job of the same name by now
                    raise
        return p

    def _create_pods(self, job: TFTrainingJob, pods: list[dict[str, Any]]) -> None:
        key = (job.namespace, job.name)
        # Expected before the creates, so a watch event that comes back before the call returns counts.
        self.expectations.expect(key, creates=pods)
        for i, pod in enumerate(pods):
            pod_name = pod["metadata"]["name"]
            try:
                with priority(URGENT):
                    self.core.create_namespaced_pod(job.namespace, pod)
            except ApiException as err:
                if err.status != 409:
                    self._not_created(key, pods[i:])
                    raise
                # Names are deterministic, so a conflict is a pod the cache did not show: this
                # attempt's own (created by an earlier run; its event is coming) or another's.
                held = self._fresh_pod(job.namespace, pod_name)
                if held is not None and same_attempt(held, pod, job.metadata.uid):
                    continue
                self._not_created(key, pods[i:])
                whose = "it no longer exists" if held is None else describe_owner(held)
                ours = held is None or controller_uid(held) == job.metadata.uid
                raise _Taken(
                    f"pod {pod_name} already exists and is not this attempt's: {whose}", ours
                ) from None

    def _not_created(self, key: Key, pods: list[dict[str, Any]]) -> None:
        # Creates that failed or were never tried: their pods will not show up; nothing to wait for.
        for pod in pods:
            self.expectations.lower(key, create=pod["metadata"]["name"])

    def _delete_pod(self, key: Key, pod: str, uid: str | None, grace: int | None) -> None:
        # The uid the plan saw: a pod deleted and created again under the same name (by someone else,
        # or by us after a retry the cache has not shown yet) is not the pod the plan meant.
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if uid:
            options["preconditions"] = {"uid": uid}
            self.expectations.expect(key, deletes=[uid])
        try:
            with priority(URGENT):
                self.core.delete_namespaced_pod(pod, key[0], body=options)
        except ApiException as err:
            if uid:
                self.expectations.lower(key, delete=uid)
            if err.status == 409:
                log.info("pod %s/%s is no longer the pod %s: not deleted", key[0], pod, uid)
            elif err.status != 404:
                raise

    def _event(self, job: TFTrainingJob, e: Event) -> None:
        """Record a plan's event on the job, and count what it says in the job metrics."""
        self._record(job.namespace, job.name, job.metadata.uid, job.metadata.resource_version, e)
        metrics.count(e)

    def _record(self, namespace: str, name: str, uid: str | None, version: str | None, e: Event) -> None:
        event = event_object(namespace, name, uid, version, e, self.clock())
        if self.events is not None:
            self.events.put(namespace, event)
            return
        try:
            self._send_event(namespace, event)
        except ApiException as err:  # an event lost is not worth a failed reconcile
            log.warning("could not record event %s on %s/%s: %s", e.reason, namespace, name, err.reason)

    def _send_event(self, namespace: str, event: Any) -> None:
        with priority(LOW):
            self.core.create_namespaced_event(namespace, event)

    # -- reads -------------------------------------------------------------------------------------

    def _fresh_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return fresh_pods(self.core, namespace, name)

    def _fresh_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return fresh_pod(self.core, namespace, name)

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
        except GaveWay:  # a read waited for its turn while the job changed: the newer reconcile is queued
            pass
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
