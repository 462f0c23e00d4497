"""Kueue admits a TFTrainingJob through a Workload the operator owns and follows. Pure functions.

The route is the one Kueue's own job integrations (batch/v1 Job, JobSet, Kubeflow's jobs) take, and
AppWrapper takes as an external framework: the job's controller writes the Workload, Kueue admits it,
the controller starts the pods on the admitted flavors and tells Kueue when the job ended. Kueue's
pod-group integration would admit our pods instead, but it would judge them too: a preempted pod
group fails its pods, which the operator would count against runPolicy.backoffLimit, and the group's
quota would be released pod by pod while the chief still uploads. Owning the Workload keeps every
judgement of the job in one place (`ti.operator.reconcile`).

The protocol, as Kueue's jobframework reconciler speaks it:
- a job labelled `kueue.x-k8s.io/queue-name` gets one Workload: one podSet per role, each with the
  role's pod template and count, and the priority of its WorkloadPriorityClass;
- no pod exists until the Workload is admitted (status.admission set, Admitted condition True); the
  pods then get the nodeLabels and tolerations of the flavors Kueue assigned to their podSet;
- an Evicted condition (preemption, a quota change, a deleted or stopped queue) deletes the pods;
  once none is left the operator clears the admission (QuotaReserved False, Requeued), which gives
  the quota back and puts the Workload back in its queue. An eviction is not a failure: it never
  counts against runPolicy.backoffLimit, and the same attempt runs again when Kueue admits it again;
- a finished job marks its Workload Finished, which releases the quota at once;
- a job suspended (runPolicy.suspend) deactivates its Workload (spec.active false), as Kueue's own
  integrations do for a stopped job: Kueue evicts it, the pods go, and the quota is given back as
  after any eviction. Resumed, the operator reactivates the Workload, and Kueue queues it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ti import contract
from ti.api import TFTrainingJob
from ti.operator.render import owner_reference
from ti.reasons import KueueReason

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
WORKLOADS = "workloads"
RESOURCE_FLAVORS = "resourceflavors"
PRIORITY_CLASSES = "workloadpriorityclasses"
QUEUE_LABEL = contract.KUEUE_QUEUE_LABEL
PRIORITY_LABEL = contract.KUEUE_PRIORITY_LABEL
# Kueue's names for what happened to a Workload (its condition types and their reasons).
QUOTA_RESERVED, ADMITTED, EVICTED, FINISHED, REQUEUED = (
    "QuotaReserved",
    "Admitted",
    "Evicted",
    "Finished",
    "Requeued",
)
# Evictions after which Kueue's own integrations mark the Workload Requeued=True (it goes back in
# line at once); after any other (a stopped queue, an inactive Workload) it waits to be reactivated.
_REQUEUED_EVICTIONS = (KueueReason.PREEMPTED, KueueReason.NODE_FAILURES)
# How soon a job whose queue cannot be reached (Kueue not installed) is looked at again.
UNAVAILABLE_RETRY_SECONDS = 30.0
# How soon a job whose WorkloadPriorityClass does not exist is looked at again (its creation wakes
# nothing of ours).
PRIORITY_CLASS_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class QueueState:
    """What the controller knows of a queued job's Kueue objects, for the planner."""

    available: bool = True  # the API server serves Kueue's API
    workload: Mapping[str, Any] | None = None
    flavors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ResourceFlavors by name
    priority: int | None = None  # the value of the job's WorkloadPriorityClass, if it names one
    missing_priority_class: str | None = None  # the class the job's label names, when it does not exist


def queue_name(job: TFTrainingJob) -> str | None:
    """The LocalQueue the job asks for, or None for a job Kueue does not manage."""
    return job.metadata.labels.get(QUEUE_LABEL) or None


def workload_name(job: TFTrainingJob) -> str:
    """The Workload's name: the job's name and a piece of its uid, so a job deleted and created again
    under the same name never meets the old job's Workload while the garbage collector removes it."""
    return f"tftrainingjob-{job.name}-{(job.metadata.uid or '')[:5]}".rstrip("-")


@dataclass(frozen=True)
class Admission:
    """Where a job stands in its queue, read from its Workload."""

    state: Literal["missing", "waiting", "admitted", "evicted", "finished"]
    reason: str | None = None  # Kueue's reason (an eviction's: Preempted, ...)
    message: str | None = None  # Kueue's words: why it waits, or why it was evicted
    cluster_queue: str | None = None
    flavors: dict[str, list[str]] = field(default_factory=dict)  # podSet -> the flavors it got
    holds_quota: bool = False  # status.admission is set: the quota is still reserved for it
    resource_version: str | None = None


def read_workload(workload: Mapping[str, Any] | None) -> Admission:
    if workload is None:
        return Admission("missing")
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    version = (workload.get("metadata") or {}).get("resourceVersion")
    admission = status.get("admission") or {}
    flavors = {
        str(a.get("name")): sorted(set((a.get("flavors") or {}).values()))
        for a in admission.get("podSetAssignments") or []
    }
    common = {
        "cluster_queue": admission.get("clusterQueue"),
        "flavors": flavors,
        "holds_quota": bool(admission),
        "resource_version": version,
    }

    def said(type_: str) -> tuple[str | None, str | None]:
        c = conditions.get(type_) or {}
        return c.get("reason"), c.get("message")

    if _true(conditions.get(FINISHED)):
        return Admission("finished", *said(FINISHED), **common)  # type: ignore[arg-type]
    evicted = conditions.get(EVICTED) or {}
    # Reactivated after a deactivation, its admission cleared, a Workload is back in line: Kueue
    # clears Evicted only once it admits the Workload again.
    back_in_line = evicted.get("reason") == KueueReason.DEACTIVATED and active(workload) and not admission
    if _true(evicted) and not back_in_line:
        return Admission("evicted", *said(EVICTED), **common)  # type: ignore[arg-type]
    if _true(conditions.get(ADMITTED)) and admission:
        return Admission("admitted", *said(ADMITTED), **common)  # type: ignore[arg-type]
    # Waiting: QuotaReserved=False says why (no quota, no such LocalQueue, an inactive ClusterQueue).
    reason, message = said(QUOTA_RESERVED)
    if _true(conditions.get(QUOTA_RESERVED)):
        reason, message = said(ADMITTED)  # quota reserved, admission checks pending
    elif back_in_line and message == evicted.get("message"):
        reason, message = None, None  # the eviction's words, copied by requeue_patch: not why it waits
    return Admission("waiting", reason, message, **common)  # type: ignore[arg-type]


def active(workload: Mapping[str, Any]) -> bool:
    """Kueue's spec.active: false takes the Workload out of its queue (and evicts it if admitted)."""
    return (workload.get("spec") or {}).get("active") is not False


def suspended_by_us(workload: Mapping[str, Any]) -> bool:
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return annotations.get(contract.ANNOTATION_SUSPENDED) == "true"


def activation_patch(on: bool) -> dict[str, Any]:
    """The merge patch that (de)activates a suspended or resumed job's Workload, saying it was us."""
    return {
        "metadata": {"annotations": {contract.ANNOTATION_SUSPENDED: None if on else "true"}},
        "spec": {"active": on},
    }


def workload(job: TFTrainingJob, pods: list[dict[str, Any]], priority: int | None) -> dict[str, Any]:
    """The Workload of `job`, from its rendered pods: one podSet per role, owned by the job."""
    queue = queue_name(job)
    by_role: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_role.setdefault(pod["metadata"]["labels"][contract.LABEL_ROLE], []).append(pod)
    pod_sets = [
        {"name": role, "count": len(group), "template": _template(group[0])}
        for role, group in by_role.items()
    ]
    spec: dict[str, Any] = {"queueName": queue, "podSets": pod_sets}
    priority_class = job.metadata.labels.get(PRIORITY_LABEL)
    if priority_class and priority is not None:
        spec["priorityClassRef"] = {"group": GROUP, "kind": "WorkloadPriorityClass", "name": priority_class}
        spec["priority"] = priority
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {
            "name": workload_name(job),
            "namespace": job.namespace,
            "labels": {contract.LABEL_JOB: job.name, QUEUE_LABEL: queue},
            "ownerReferences": [ref for ref in [owner_reference(job)] if ref],
        },
        "spec": spec,
    }


def pod_set(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["labels"][contract.LABEL_ROLE])


@dataclass(frozen=True)
class Placement:
    """Where Kueue's admission puts one podSet: the nodeLabels and tolerations of its flavors."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def placements(admission: Admission, flavors: Mapping[str, Mapping[str, Any]]) -> dict[str, Placement]:
    """podSet -> Placement, from the ResourceFlavors (by name) the admission names. A flavor that does
    not exist (deleted after admission) places nothing."""
    out = {}
    for name, used in admission.flavors.items():
        selector: dict[str, str] = {}
        tolerations: list[dict[str, Any]] = []
        for flavor in used:
            spec = (flavors.get(flavor) or {}).get("spec") or {}
            selector.update(spec.get("nodeLabels") or {})
            tolerations += [t for t in spec.get("tolerations") or [] if t not in tolerations]
        out[name] = Placement(selector, tolerations)
    return out


def place(pod: dict[str, Any], where: Placement | None) -> dict[str, Any]:
    """`pod` with its podSet's placement added (Kueue's flavors add to the job's own selector)."""
    if where is None or not (where.node_selector or where.tolerations):
        return pod
    spec = dict(pod["spec"])
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **where.node_selector}
    have = list(spec.get("tolerations") or [])
    spec["tolerations"] = have + [t for t in where.tolerations if t not in have]
    return {**pod, "spec": spec}


def finished_patch(
    workload: Mapping[str, Any], succeeded: bool, message: str, now: datetime
) -> dict[str, Any]:
    """The Workload's status once the job ended: Finished, which releases its quota."""
    reason = KueueReason.SUCCEEDED if succeeded else KueueReason.FAILED
    return {"conditions": _with(workload, _condition(FINISHED, True, reason, message, now, workload))}


def requeue_patch(workload: Mapping[str, Any], admission: Admission, now: datetime) -> dict[str, Any]:
    """The Workload's status once an evicted job's pods are gone: its admission cleared, so the quota
    is free and Kueue queues it again (what Kueue's jobframework writes for its own jobs)."""
    why = admission.message or "evicted"
    again = admission.reason in _REQUEUED_EVICTIONS
    requeued = _condition(REQUEUED, again, admission.reason or EVICTED, why, now, workload)
    unreserved = _condition(QUOTA_RESERVED, False, KueueReason.PENDING, why, now, workload)
    unadmitted = _condition(
        ADMITTED, False, KueueReason.NO_RESERVATION, "The workload has no reservation", now, workload
    )
    return {"admission": None, "conditions": _with(workload, requeued, unreserved, unadmitted)}


def _with(workload: Mapping[str, Any], *conditions: dict[str, Any]) -> list[dict[str, Any]]:
    # A merge patch replaces the whole list: every condition Kueue wrote is kept, ours replace theirs.
    ours = {c["type"]: c for c in conditions}
    kept = [c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") not in ours]
    return kept + list(ours.values())


def _condition(
    type_: str, value: bool, reason: str, message: str, now: datetime, workload: Mapping[str, Any]
) -> dict[str, Any]:
    old = next(
        (c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None
    )
    status = "True" if value else "False"
    moved = old is None or old.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ") if moved else old.get("lastTransitionTime"),  # type: ignore[union-attr]
        "observedGeneration": (workload.get("metadata") or {}).get("generation") or 1,
    }


def _true(condition: Mapping[str, Any] | None) -> bool:
    return bool(condition) and condition.get("status") == "True"  # type: ignore[union-attr]


def _template(pod: Mapping[str, Any]) -> dict[str, Any]:
    # What Kueue reads of a pod: its containers' requests, selectors, tolerations, affinity, priority.
    # Names and node are per pod; the template is the role's.
    spec = {k: v for k, v in pod["spec"].items() if k not in ("nodeName", "hostname", "subdomain")}
    labels = {k: v for k, v in (pod["metadata"].get("labels") or {}).items() if k != contract.LABEL_INDEX}
    return {"metadata": {"labels": labels}, "spec": spec}
