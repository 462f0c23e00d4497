"""The operator's one decision: given a job and what exists, what to do next. Pure and idempotent.

`plan()` serves create, resume, update, pod events and the drift timer alike; it never assumes an
order of events. The same observed state gives the same plan, so replaying it is harmless:

- pod names are deterministic, so an instance never gets a second pod (a create that meets an
  existing pod is a conflict the caller ignores);
- a retry first deletes every pod of the current attempt, records attempt+1 in status.restartCount,
  and creates the next attempt's pods only once none of the old ones is left;
- pods are created only while status says the attempt's pods do not exist yet (phase unset,
  Pending or Suspended); after that, a missing pod is a deleted pod, a platform fault.
  So `pods` may come from a watch cache only if it shows every pod the operator created: the
  controller waits for its expectations (`ti.operator.cache.Expectations`) before it plans, and
  confirms a plan that retries or fails the job on a fresh list (see `ti.operator.controller`).

The plan's steps are `ti.operator.plans.Plan`; `ti.operator.refusals` has the plans for a job the API
server will not take as it is. The caller applies a plan in this order: create the Workload, create pods, create the Service, patch
status, delete pods, patch the Workload's status, emit events, delete the job; then looks again after `requeue_after` seconds if set. (Pods exist before
a status says so; a status records a retry before the pods it replaces go. An operator killed between
two steps thus never finds a job whose pods were created and deleted while status said nothing.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from ti import contract
from ti.api import (
    CleanPodPolicy,
    ConditionStatus,
    ConditionType,
    InstancePhase,
    Phase,
    TFTrainingJob,
    TFTrainingJobStatus,
    status_body,
)
from ti.catalog import Catalog, CatalogError
from ti.operator import kueue
from ti.operator import status as st
from ti.operator.plans import WAIT_SECONDS, Event, Plan, PodDeletion, merge_patch
from ti.operator.pods import START_ERRORS, STUCK_REASONS, attempt_of, read_pod
from ti.operator.render import check, render
from ti.operator.render import service as render_service
from ti.operator.settings import OperatorConfig
from ti.operator.status import current_attempt, derive_status, transition
from ti.reasons import Deletion, EventReason, Reason

# A retried attempt's pods are created this long after the retry was decided. Platform faults come in
# bursts (a node going away, a preemption wave); and a node agent still finishing the old pods must not
# meet new pods of the same names.
RETRY_BACKOFF_SECONDS = 3.0

_CREATABLE = (None, Phase.PENDING, Phase.SUSPENDED, Phase.QUEUED)
_FREE_ALL_REASONS = (
    Reason.UNSCHEDULABLE,
    Reason.FAILED_CREATE,
    Reason.MAX_RUN_EXCEEDED,
    Reason.INVALID_SPEC,
    Reason.BACKOFF_LIMIT_EXCEEDED,
)


def plan(
    job: TFTrainingJob,
    pods: Iterable[Mapping[str, Any]],
    service: Mapping[str, Any] | None,
    now: datetime,
    catalog: Catalog,
    config: OperatorConfig,
    queue: kueue.QueueState | None = None,
) -> Plan:
    """Decide the next step for `job`, given its pods (any attempt) and its Service (or None); for a
    job in a Kueue queue, `queue` is what the controller knows of its Workload."""
    if job.metadata.deletion_timestamp is not None:
        return Plan()  # the garbage collector removes the pods (and Workload) through their owner
    mine, foreign = _owned(job, pods)
    d = _Decision(job, now, config, queue if kueue.queue_name(job) else None)
    old = job.status
    if old is not None and old.phase is not None and old.phase.finished:
        d.finished(mine, old)
    else:
        d.active(mine, foreign, service, catalog)
    d.release()
    return d.plan()


class _Decision:
    # Collects one plan; each path below fills in what it needs.

    def __init__(
        self, job: TFTrainingJob, now: datetime, config: OperatorConfig, queue: kueue.QueueState | None
    ) -> None:
        self.job = job
        self.now = now
        self.config = config
        self.queue = queue
        self.create_workload: dict[str, Any] | None = None
        self.workload_patch: dict[str, Any] | None = None
        self.workload_status: dict[str, Any] | None = None
        self.admission: kueue.Admission | None = None
        self.old = job.status or TFTrainingJobStatus()
        self.new: TFTrainingJobStatus = self.old
        self.create_pods: list[dict[str, Any]] = []
        self.deletions: list[PodDeletion] = []
        self.service: dict[str, Any] | None = None
        self.events: list[Event] = []
        self.delete_job = False
        self.requeue: list[float] = []

    # -- the paths --------------------------------------------------------------------------------

    def active(
        self,
        mine: list[Mapping[str, Any]],
        foreign: list[Mapping[str, Any]],
        service: Mapping[str, Any] | None,
        catalog: Catalog,
    ) -> None:
        job, old = self.job, self.old
        attempt = current_attempt(job, mine)
        try:
            check(job, catalog)
        except CatalogError as err:
            self.fail(Reason.INVALID_SPEC, err.message)
            self.delete(_live(mine), Reason.INVALID_SPEC, graceful=True)
            return

        # The pods as they would be created: only a job that creates pods (or a Workload) needs them,
        # and rendering is most of the CPU of a reconcile that only reads its pods.
        @functools.cache
        def rendered() -> list[dict[str, Any]]:
            return render(job, catalog, self.config, attempt, now=self.now).pods

        policy = job.spec.run_policy
        if policy.stop or old.phase in (Phase.STOPPING,):
            self.stop(mine)
            return
        if policy.suspend:
            self.suspend(mine)
            if self.queue is not None:
                self.deactivate(mine, self.queue)
            return
        if self.queue is not None and not self.admitted(mine, rendered, self.queue):
            return

        outdated = [p for p in mine if attempt_of(p) != attempt]
        current = [p for p in mine if attempt_of(p) == attempt]
        self.delete(outdated, Deletion.OUTDATED, graceful=False)

        if old.phase in _CREATABLE:
            # This attempt's pods are not known to exist: create those missing, once nothing that
            # holds their names (an old attempt, a job of the same name before) is still there.
            blockers = outdated + foreign + [p for p in current if _deleting(p)]
            if blockers:
                self.to(
                    Phase.PENDING,
                    reason=old.reason if old.phase == Phase.PENDING else Reason.WAITING_FOR_PODS,
                    message=f"waiting for {len(blockers)} old pods to go away",
                )
                self.requeue.append(WAIT_SECONDS)
                return
            have = {_name(p) for p in current}
            missing = [p for p in self.placed(rendered()) if p["metadata"]["name"] not in have]
            backoff = self.retry_backoff_left(attempt, current)
            if missing and backoff > 0:
                self.requeue.append(backoff)
                return
            if missing:
                if job.spec.distributed and service is None:
                    self.service = render_service(job)
                self.create_pods = missing
                self.to(Phase.STARTING)
                self.admitted_now()
                self.new.restart_count = attempt
                self.new.instances = [
                    i if i.pod else i.model_copy(update={"pod": i.name, "phase": InstancePhase.STARTING})
                    for i in st.instance_statuses(job, [read_pod(p) for p in current], attempt)
                ]
                pods = "pod" if len(missing) == 1 else "pods"
                self.event(
                    "Normal",
                    EventReason.CREATED,
                    f"created {len(missing)} {pods} (attempt {attempt})",
                    attempt=attempt,
                )
                # Pod events wake the operator as the pods move; this is the deadline if none come.
                self.requeue.append(float(policy.scheduling_timeout_seconds))
                return
            # All pods exist already (the operator stopped before it recorded them): read them.

        if job.spec.distributed and service is None:
            self.service = render_service(job)  # someone deleted it; the pods need their DNS names
        self.new, verdict = derive_status(job, mine, self.now)
        self.instance_events(current, attempt)
        self.stuck_event(verdict)
        if verdict.retry:
            self.delete(current, Deletion.RETRY, graceful=True)
            self.event(
                "Warning",
                EventReason.RESTARTING,
                f"restarting all instances (attempt {self.new.restart_count} of "
                f"runPolicy.backoffLimit {policy.backoff_limit}): {verdict.message}",
                attempt=self.new.restart_count,
            )
            self.requeue.append(WAIT_SECONDS)
            return
        if self.new.phase is not None and self.new.phase.finished:
            self.finish_events()
            self.clean(mine, self.new)
            self.ttl(self.new)
            return
        if verdict.recheck_at is not None:
            self.requeue.append((verdict.recheck_at - self.now).total_seconds())

    def retry_backoff_left(self, attempt: int, current: list[Mapping[str, Any]]) -> float:
        """Seconds until a retried attempt's pods may be created (0 for a first attempt or once begun)."""
        restarting = self.old.condition(ConditionType.RESTARTING)
        if attempt == 0 or current or restarting is None or restarting.status != ConditionStatus.TRUE:
            return 0.0
        if restarting.last_transition_time is None:
            return 0.0
        elapsed = (self.now - restarting.last_transition_time).total_seconds()
        return max(0.0, RETRY_BACKOFF_SECONDS - elapsed)

    def finished(self, mine: list[Mapping[str, Any]], old: TFTrainingJobStatus) -> None:
        if old.observed_generation != self.job.metadata.generation:
            self.new = old.model_copy(update={"observed_generation": self.job.metadata.generation})
        self.clean(mine, old)
        self.ttl(old)

    def stop(self, mine: list[Mapping[str, Any]]) -> None:
        live = _live(mine)
        self.delete(live, Deletion.STOP, graceful=True)
        if live:
            self.to(
                Phase.STOPPING,
                reason=Reason.STOP_REQUESTED,
                message="runPolicy.stop is true: stopping the pods",
            )
            if self.old.phase != Phase.STOPPING:
                self.event(
                    "Normal",
                    EventReason.STOPPING,
                    "runPolicy.stop is true: sending SIGTERM to every instance",
                )
            self.requeue.append(WAIT_SECONDS)
            return
        self.to(Phase.STOPPED, reason=Reason.STOPPED, message="stopped on request (runPolicy.stop)")
        self.event("Normal", EventReason.STOPPED, "the job was stopped on request; what was uploaded is kept")
        self.clean(mine, self.new)
        self.ttl(self.new)

    def suspend(self, mine: list[Mapping[str, Any]]) -> None:
        self.delete(mine, Deletion.SUSPEND, graceful=True)
        self.to(Phase.SUSPENDED, reason=Reason.SUSPENDED, message="runPolicy.suspend is true: pods deleted")
        self.new.instances = st.instance_statuses(self.job, [], self.new.restart_count)
        if self.old.phase != Phase.SUSPENDED:
            self.event(
                "Normal",
                EventReason.SUSPENDED,
                "runPolicy.suspend is true: deleting the pods, keeping the job",
            )
        if mine:
            self.requeue.append(WAIT_SECONDS)

    # -- a job in a Kueue queue ----------------------------------------------------------------------

    def admitted(
        self, mine: list[Mapping[str, Any]], pods: Callable[[], list[dict[str, Any]]], q: kueue.QueueState
    ) -> bool:
        """True when Kueue lets the job run; otherwise it waits in its queue, with no pod."""
        name = kueue.queue_name(self.job)
        if not q.available:
            self.wait_in_queue(
                mine,
                Reason.QUEUE_UNAVAILABLE,
                f"the label {kueue.QUEUE_LABEL} names LocalQueue {name}, but the API server does not serve "
                f"{kueue.API_VERSION}: install Kueue, or remove the label to run the job without a queue",
            )
            self.requeue.append(kueue.UNAVAILABLE_RETRY_SECONDS)
            return False
        if q.workload is not None and not kueue.active(q.workload) and kueue.suspended_by_us(q.workload):
            # Resumed from runPolicy.suspend: back in line (a Workload someone else deactivated waits
            # for them, as evicted).
            self.workload_patch = kueue.activation_patch(True)
            self.wait_in_queue(
                mine, Reason.WAITING_FOR_QUOTA, f"waiting in LocalQueue {name} for Kueue to admit it"
            )
            return False
        a = kueue.read_workload(q.workload)
        if a.state == "missing" and q.missing_priority_class:
            self.wait_in_queue(
                mine,
                Reason.PRIORITY_CLASS_NOT_FOUND,
                f"the label {kueue.PRIORITY_LABEL} names WorkloadPriorityClass {q.missing_priority_class}, "
                f"which does not exist: create it, or remove the label; the job joins LocalQueue {name} "
                "once one of them is done",
            )
            self.requeue.append(kueue.PRIORITY_CLASS_RETRY_SECONDS)
            return False
        if a.state == "missing":
            self.create_workload = kueue.workload(self.job, pods(), q.priority)
            self.wait_in_queue(
                mine, Reason.WAITING_FOR_QUOTA, f"waiting in LocalQueue {name} for Kueue to admit it"
            )
            return False
        if a.state == "waiting":
            said = f": {a.message}" if a.message else " for Kueue to admit it"
            self.wait_in_queue(mine, Reason.WAITING_FOR_QUOTA, f"waiting in LocalQueue {name}{said}")
            return False
        if a.state == "evicted":
            live = _live(mine)
            self.wait_in_queue(
                mine,
                Reason.EVICTED_BY_QUEUE,
                f"Kueue evicted the job ({a.reason}): {a.message}; its pods are deleted, and the same "
                "attempt runs again once Kueue admits it again",
            )
            if not live and a.holds_quota and q.workload is not None:
                self.workload_status = kueue.requeue_patch(q.workload, a, self.now)
            return False
        if a.state == "finished":
            self.fail(Reason.QUEUE_FINISHED, f"Kueue finished the job's Workload ({a.reason}): {a.message}")
            self.delete(_live(mine), Reason.QUEUE_FINISHED, graceful=True)
            return False
        self.admission = a
        return True

    def deactivate(self, mine: list[Mapping[str, Any]], q: kueue.QueueState) -> None:
        """A suspended job gives its quota back: its Workload is deactivated, so Kueue evicts it and
        admits others, and once its pods are gone the admission is cleared as after any eviction."""
        if not q.available or q.workload is None:
            return  # nothing held
        if kueue.active(q.workload):
            self.workload_patch = kueue.activation_patch(False)
        a = kueue.read_workload(q.workload)
        if a.state == "evicted" and a.holds_quota and not _live(mine):
            self.workload_status = kueue.requeue_patch(q.workload, a, self.now)
        admitted = self.new.condition(ConditionType.ADMITTED)
        if admitted is not None and admitted.status == ConditionStatus.TRUE:
            st.set_condition(
                self.new, ConditionType.ADMITTED, False, reason=Reason.SUSPENDED,
                message="runPolicy.suspend is true: its Workload is deactivated and its quota given back",
                now=self.now, generation=self.job.metadata.generation,
            )  # fmt: skip

    def placed(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`pods` on the flavors Kueue admitted the job to (an admission never changes while pods
        exist)."""
        if self.queue is None:
            return pods
        where = kueue.placements(self.admission or kueue.Admission("admitted"), self.queue.flavors)
        return [kueue.place(p, where.get(kueue.pod_set(p))) for p in pods]

    def wait_in_queue(self, mine: list[Mapping[str, Any]], reason: Reason, message: str) -> None:
        self.delete(mine, Deletion.QUEUE, graceful=True)
        self.to(Phase.QUEUED, reason=reason, message=message)
        self.new.instances = st.instance_statuses(self.job, [], self.new.restart_count)
        st.set_condition(
            self.new, ConditionType.ADMITTED, False, reason=reason, message=message,
            now=self.now, generation=self.job.metadata.generation,
        )  # fmt: skip
        if self.old.phase != Phase.QUEUED or self.old.reason != reason:
            if reason == Reason.EVICTED_BY_QUEUE:
                self.event("Warning", EventReason.EVICTED_BY_QUEUE, message, status_reason=reason)
            else:
                # A wait that the user must end is a Warning; Kueue's quota ends the others.
                user = reason == Reason.PRIORITY_CLASS_NOT_FOUND
                self.event("Warning" if user else "Normal", EventReason.QUEUED, message, status_reason=reason)
        if mine:
            self.requeue.append(WAIT_SECONDS)

    def admitted_now(self) -> None:
        # The pods of an admitted job are being created: say by whom, and on what.
        a = self.admission
        if a is None:
            return
        flavors = ", ".join(f"{s}={'+'.join(f)}" for s, f in sorted(a.flavors.items())) or "none"
        message = f"admitted by ClusterQueue {a.cluster_queue} (flavors: {flavors})"
        st.set_condition(
            self.new, ConditionType.ADMITTED, True, reason=Reason.ADMITTED, message=message,
            now=self.now, generation=self.job.metadata.generation,
        )  # fmt: skip
        self.event("Normal", EventReason.ADMITTED, message)

    def release(self) -> None:
        """A finished job's Workload is marked Finished: Kueue frees its quota at once."""
        q = self.queue
        if q is None or q.workload is None or self.new.phase is None or not self.new.phase.finished:
            return
        if kueue.read_workload(q.workload).state == "finished":
            return
        said = self.new.failure_reason or self.new.reason or self.new.phase.value
        self.workload_status = kueue.finished_patch(
            q.workload, self.new.phase == Phase.COMPLETED, said, self.now
        )

    # -- pieces -----------------------------------------------------------------------------------

    def to(self, phase: Phase, *, reason: str | None = None, message: str | None = None) -> None:
        self.new = transition(
            self.old,
            phase,
            reason=reason,
            message=message,
            now=self.now,
            generation=self.job.metadata.generation,
        )

    def fail(self, reason: str, message: str) -> None:
        self.to(Phase.FAILED, reason=reason, message=message)
        self.finish_events()
        self.ttl(self.new)

    def delete(self, pods: Iterable[Mapping[str, Any]], reason: str, *, graceful: bool) -> None:
        named = {d.name for d in self.deletions}
        for p in pods:
            if _deleting(p) or _name(p) in named:
                continue
            grace = self.config.stop_grace_seconds if graceful and _live([p]) else 0
            self.deletions.append(PodDeletion(_name(p), reason, grace))

    def clean(self, mine: list[Mapping[str, Any]], status: TFTrainingJobStatus) -> None:
        """Apply cleanPodPolicy to a finished job; some endings free every running pod regardless."""
        policy = self.job.spec.run_policy.clean_pod_policy
        # "Running" means still training: a pod whose script has ended is kept while its upload step
        # stores the log (and `kubectl logs` still finds it), then it is a finished pod like any other.
        live = _training(mine)
        forced = status.reason in _FREE_ALL_REASONS or status.phase == Phase.STOPPED
        # Forced frees carry the job's reason (e.g. Unschedulable), so the caller can log why.
        why = (status.reason or Deletion.CLEAN) if forced else Deletion.CLEAN
        if policy == CleanPodPolicy.ALL:
            self.delete(mine, why, graceful=True)
        elif policy == CleanPodPolicy.RUNNING or forced:
            self.delete(live, why, graceful=True)
        attempt = status.restart_count
        self.delete([p for p in mine if attempt_of(p) != attempt], Deletion.OUTDATED, graceful=False)

    def ttl(self, status: TFTrainingJobStatus) -> None:
        seconds = self.job.spec.run_policy.ttl_seconds_after_finished
        if seconds is None:
            return
        ended = status.completion_time or self.now
        left = ended.timestamp() + seconds - self.now.timestamp()
        if left <= 0:
            self.delete_job = True
        else:
            self.requeue.append(left)

    def event(
        self,
        type_: Literal["Normal", "Warning"],
        reason: EventReason,
        message: str,
        *,
        attempt: int | None = None,
        status_reason: str | None = None,
    ) -> None:
        self.events.append(Event(type_, reason, message, attempt=attempt, status_reason=status_reason))

    def finish_events(self) -> None:
        if self.old.phase == self.new.phase:
            return
        if self.new.phase == Phase.COMPLETED:
            self.event(
                "Normal", EventReason.COMPLETED, f"training completed; model at {self.new.model_artifacts}"
            )
        elif self.new.phase == Phase.FAILED:
            self.event(
                "Warning",
                EventReason.FAILED,
                f"{self.new.reason}: {self.new.failure_reason}",
                status_reason=self.new.reason,
            )

    def instance_events(self, current: list[Mapping[str, Any]], attempt: int) -> None:
        # Once per instance and attempt: status remembers what was already reported.
        ended = (InstancePhase.FAILED, InstancePhase.DELETED)
        before = {i.name: i for i in self.old.instances if i.restarts == attempt}
        for r in (read_pod(p) for p in current):
            was = before.get(r.name)
            if r.phase not in ended or (was is not None and was.phase in ended):
                continue
            code = f" with exit code {r.exit_code}" if r.exit_code is not None else ""
            self.event(
                "Warning",
                EventReason.INSTANCE_FAILED,
                f"{r.name} failed{code}: {r.reason}: {r.message or ''}".rstrip(": "),
                attempt=attempt,
            )

    def stuck_event(self, verdict: st.Verdict) -> None:
        # A container waiting on its image or a Secret: a Warning once per distinct message (the status
        # remembers the last one), so `kubectl describe` says it long before the job fails.
        if verdict.retry or verdict.phase.finished or verdict.reason not in STUCK_REASONS:
            return
        running = self.old.condition(ConditionType.RUNNING)
        said = running.message if running is not None else None
        if self.old.reason == verdict.reason and said == verdict.message:
            return
        reason = EventReason(verdict.reason)  # the same words as the status reason
        self.event("Warning", reason, verdict.message or reason, status_reason=verdict.reason)

    def transition_events(self) -> None:
        if self.old.phase == Phase.SUSPENDED and self.new.phase not in (Phase.SUSPENDED, None):
            queue = kueue.queue_name(self.job) if self.queue is not None else None
            then = f"back in LocalQueue {queue}" if queue else "recreating the pods"
            self.events.insert(0, Event("Normal", EventReason.RESUMED, f"runPolicy.suspend is false: {then}"))

    def plan(self) -> Plan:
        self.transition_events()
        old_body = status_body(self.old) if self.job.status is not None else {}
        new_body = status_body(self.new)
        patch = merge_patch(old_body, new_body) if new_body != old_body else None
        waits = [max(0.0, s) for s in self.requeue]
        return Plan(
            create_pods=self.create_pods,
            delete_pods=self.deletions,
            create_service=self.service,
            status=self.new if patch else None,
            status_patch=patch or None,
            events=self.events,
            delete_job=self.delete_job,
            requeue_after=min(waits) if waits else None,
            create_workload=self.create_workload,
            workload_patch=self.workload_patch,
            workload_status=self.workload_status,
            workload=_workload_ref(self.queue),
        )


def _owned(
    job: TFTrainingJob, pods: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    # Pods of a deleted job of the same name may linger until the garbage collector gets to them:
    # they are not ours to read, but they hold our pods' names.
    mine, foreign = [], []
    for p in pods:
        meta = p.get("metadata") or {}
        if (meta.get("labels") or {}).get(contract.LABEL_JOB) != job.name:
            continue
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
        if job.metadata.uid and owners and all(o.get("uid") != job.metadata.uid for o in owners):
            foreign.append(p)
        else:
            mine.append(p)
    return mine, foreign


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def _deleting(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _training(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The live pods whose training container has not ended."""
    return [p for p in _live(pods) if not _main_ended(p)]


def _main_ended(pod: Mapping[str, Any]) -> bool:
    # A main container that could not even start never trained: nothing to keep, and its upload step
    # would only wait for a launcher that never runs.
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        if c.get("name") == contract.MAIN_CONTAINER:
            end = (c.get("state") or {}).get("terminated") or {}
            return bool(end) and end.get("reason") not in START_ERRORS
    return False


def _live(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        p for p in pods if ((p.get("status") or {}).get("phase") or "Pending") not in ("Succeeded", "Failed")
    ]


def _workload_ref(queue: kueue.QueueState | None) -> tuple[str, str | None] | None:
    if queue is None or queue.workload is None:
        return None
    meta = queue.workload.get("metadata") or {}
    return str(meta.get("name")), meta.get("resourceVersion")
