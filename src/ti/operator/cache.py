"""What the operator knows of its jobs, their pods and Services: in memory, fed by watches, raw JSON.

A reconcile reads only this state (client-go's informers and the Job controller do the same); what a
stale cache could get wrong is handled where it can happen:

- `Informer`: one list, then a watch resumed from the last resourceVersion seen, a fresh list on 410
  Gone. Pods and Services are watched with a server-side label selector (our job label), so pods that
  are not ours are never sent, decoded or kept. Objects stay raw dicts, never the client's models.
- `JobStore`: jobs as kopf delivers them, plus the job our own status write returned, so a reconcile
  right after a write never reads the job as it was before it.
- `Expectations`: pods we created or deleted are known before their watch events arrive.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from ti import contract

log = logging.getLogger("ti.operator.cache")

Key = tuple[str, str]  # (namespace, job name)
Obj = dict[str, Any]

# How long a reconcile waits for the watch to show what we created or deleted before it distrusts
# the cache and lists the job's pods from the API server (client-go's ExpectationsTimeout is 5 min;
# a watch that is this late is a watch that is broken).
EXPECTATION_TIMEOUT_SECONDS = 30.0
# Server-side timeout of one watch request; the watch is then resumed from its resourceVersion.
WATCH_SECONDS = 300


def rv_newer(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """True unless `new` is an older version of the same object than `old`. resourceVersions of one
    object are etcd revisions, so they compare as integers (client-go's mutation cache does the same);
    anything else (another uid, an unparsable version) counts as newer."""
    nm, om = new.get("metadata") or {}, old.get("metadata") or {}
    if nm.get("uid") != om.get("uid"):
        return True
    try:
        return int(nm.get("resourceVersion") or 0) >= int(om.get("resourceVersion") or 0)
    except ValueError:
        return True


# What the planner reads of a pod (ti.operator.pods.read_pod and the controller); the rest of a pod,
# most of its bytes (managedFields, the spec, image IDs, IPs), is never kept: 10,000 pods known.
_POD_META = ("name", "namespace", "uid", "resourceVersion", "labels", "ownerReferences",
             "creationTimestamp", "deletionTimestamp")  # fmt: skip
_POD_STATUS = ("phase", "reason", "message", "startTime")
_CONDITION = ("type", "status", "reason", "message")
_CONTAINER = ("name", "state", "image")


def slim(obj: Mapping[str, Any]) -> Obj:
    """What the planner reads of an object: managedFields are a third of a pod and never read; of a
    pod, only what `ti.operator.pods` reads (its node of its spec)."""
    if obj.get("kind") == "Pod" or "containers" in (obj.get("spec") or {}):
        return _slim_pod(obj)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _slim_pod(pod: Mapping[str, Any]) -> Obj:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    out_status: Obj = {k: status[k] for k in _POD_STATUS if k in status}
    if "conditions" in status:
        out_status["conditions"] = [{k: c[k] for k in _CONDITION if k in c} for c in status["conditions"]]
    for kind in ("initContainerStatuses", "containerStatuses"):
        if kind in status:
            out_status[kind] = [{k: c[k] for k in _CONTAINER if k in c} for c in status[kind]]
    return {
        "kind": "Pod",
        "metadata": {k: meta[k] for k in _POD_META if k in meta},
        "spec": {"nodeName": node} if node else {},
        "status": out_status,
    }


def job_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_JOB)


# ---- what a pod says of its owner and attempt ----------------------------------------------------


def controller_uid(pod: Mapping[str, Any]) -> str | None:
    owners = [o for o in (pod.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")]
    return str(owners[0].get("uid")) if owners else None


def unowned(pod: Mapping[str, Any]) -> bool:
    return controller_uid(pod) is None


def same_attempt(held: Mapping[str, Any], wanted: Mapping[str, Any], job_uid: str | None) -> bool:
    return controller_uid(held) == job_uid and attempt_label(held) == attempt_label(wanted)


def describe_owner(pod: Mapping[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    owner = controller_uid(pod)
    if labels.get(contract.LABEL_JOB) is None:
        return "it is not a pod of any TFTrainingJob"
    if owner is None:
        return "nobody owns it"
    return f"it belongs to owner {owner}, attempt {labels.get(contract.LABEL_ATTEMPT)}"


def summary(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """name@attempt:phase of each pod, for logs."""
    return sorted(
        f"{p['metadata']['name']}@{attempt_label(p)}:{(p.get('status') or {}).get('phase')}"
        f"{'(deleting)' if p['metadata'].get('deletionTimestamp') else ''}"
        for p in pods
    )


def attempt_label(pod: Mapping[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_ATTEMPT)


@dataclass(frozen=True)
class Packed:
    """An object as the caches keep it: its JSON bytes, and the two fields they compare without
    decoding it. A decoded pod is ~10 KB of Python objects, its JSON ~1.5 KB; a reconcile decodes the
    few it reads (microseconds), so 10,000 pods known cost megabytes, not a hundred."""

    uid: str | None
    version: str | None
    data: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Packed:
        meta = obj.get("metadata") or {}
        return cls(meta.get("uid"), meta.get("resourceVersion"), json.dumps(obj, default=_plain).encode())

    def unpack(self) -> Obj:
        out: Obj = json.loads(self.data)
        return out

    def meta(self) -> Obj:
        return {"uid": self.uid, "resourceVersion": self.version}


def _plain(value: Any) -> Any:
    # kopf hands out Mapping views; JSON wants dicts and lists.
    return dict(value) if isinstance(value, Mapping) else list(value)


class JobStore:
    """The jobs kopf's watch delivered, by (namespace, name); never moved back to an older version."""

    def __init__(self) -> None:
        self._jobs: dict[Key, Packed] = {}
        self._lock = threading.Lock()

    def put(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        with self._lock:
            old = self._jobs.get(key)
            # Our own status write is stored from its response; the watch event of an earlier version
            # may still arrive after it and must not undo it.
            if old is None or rv_newer(body, {"metadata": old.meta()}):
                self._jobs[key] = Packed.of(slim(body))

    def delete(self, namespace: str, name: str, uid: str | None) -> None:
        with self._lock:
            old = self._jobs.get((namespace, name))
            if old is not None and (uid is None or old.uid == uid):
                del self._jobs[(namespace, name)]

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            held = self._jobs.get((namespace, name))
        return None if held is None else held.unpack()

    def __len__(self) -> int:
        return len(self._jobs)


class ObjectStore:
    """Objects of one kind labelled with our job label, indexed by job: (namespace, job) -> name -> obj."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_job: dict[Key, dict[str, Packed]] = defaultdict(dict)
        self._gone: dict[Key, float] = {}  # job -> when one of its objects last left the store
        self._clock = clock
        self._lock = threading.Lock()

    def upsert(self, namespace: str, obj: Obj) -> Key | None:
        job = job_of(obj)
        if job is None:
            return None
        packed = Packed.of(obj)
        with self._lock:
            self._by_job[(namespace, job)][obj["metadata"]["name"]] = packed
        return namespace, job

    def remove(self, namespace: str, obj: Mapping[str, Any]) -> Key | None:
        job = job_of(obj)
        if job is None:
            return None
        meta = obj.get("metadata") or {}
        with self._lock:
            objs = self._by_job.get((namespace, job), {})
            held = objs.get(meta.get("name", ""))
            if held is not None and held.uid == meta.get("uid"):
                del objs[meta["name"]]
                self._gone[(namespace, job)] = self._clock()
                if not objs:
                    self._by_job.pop((namespace, job), None)
        return namespace, job

    def replace(self, namespace: str, objs: Iterable[Obj]) -> set[Key]:
        """A fresh list of `namespace`: returns every job whose objects may have changed."""
        fresh: dict[Key, dict[str, Packed]] = defaultdict(dict)
        for obj in objs:
            if (job := job_of(obj)) is not None:
                fresh[(namespace, job)][obj["metadata"]["name"]] = Packed.of(obj)
        with self._lock:
            stale = {k for k in self._by_job if k[0] == namespace}
            now = self._clock()
            for k in stale:
                if self._by_job[k].keys() - fresh.get(k, {}).keys():
                    self._gone[k] = now
                del self._by_job[k]
            self._by_job.update(fresh)
        return stale | set(fresh)

    def gone_since(self, namespace: str, job: str) -> float | None:
        """Seconds since an object of `job` last left the store (None: never, or forgotten)."""
        with self._lock:
            at = self._gone.get((namespace, job))
        return None if at is None else self._clock() - at

    def forget(self, namespace: str, job: str) -> None:
        with self._lock:
            self._gone.pop((namespace, job), None)

    def of(self, namespace: str, job: str) -> list[Obj]:
        with self._lock:
            held = list(self._by_job.get((namespace, job), {}).values())
        return [p.unpack() for p in held]

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_job.values())


@dataclass
class _Expected:
    creates: dict[str, str] = field(default_factory=dict)  # pod name -> its attempt label
    deletes: set[str] = field(default_factory=set)  # pod uids
    since: float = 0.0


class Expectations:
    """What we created or deleted and the pod cache may not show yet (the Job controller's
    ControllerExpectations). Without it, a reconcile right after our creates would find the pods
    missing from the cache, take them for deleted pods (a platform fault) and retry the job; right
    after a delete, it would delete again or wait on a pod that is gone.

    An expectation is met once the cache shows it: a created pod by its name and attempt, a deleted pod
    gone or terminating. Checking against the cache, not counting events, means an event that came
    before the expectation was recorded still counts.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._jobs: dict[Key, _Expected] = {}
        self._lock = threading.Lock()

    def expect(
        self, key: Key, creates: Iterable[Mapping[str, Any]] = (), deletes: Iterable[str] = ()
    ) -> None:
        with self._lock:
            e = self._jobs.setdefault(key, _Expected())
            for pod in creates:
                e.creates[pod["metadata"]["name"]] = attempt_label(pod) or ""
            e.deletes.update(deletes)
            e.since = self._clock()

    def lower(self, key: Key, create: str | None = None, delete: str | None = None) -> None:
        """A create or delete that failed (or found nothing to do): nothing to wait for."""
        with self._lock:
            e = self._jobs.get(key)
            if e is not None:
                if create is not None:
                    e.creates.pop(create, None)
                if delete is not None:
                    e.deletes.discard(delete)

    def unmet(self, key: Key, pods: Iterable[Mapping[str, Any]]) -> float | None:
        """None when every expectation of `key` is met by `pods` (the cache's); otherwise the seconds
        since they were recorded (over EXPECTATION_TIMEOUT_SECONDS: the cache is not to be trusted)."""
        with self._lock:
            e = self._jobs.get(key)
            if e is None:
                return None
            seen: dict[str, tuple[str, bool, str]] = {}
            for p in pods:
                meta = p.get("metadata") or {}
                seen[meta.get("name", "")] = (
                    attempt_label(p) or "",
                    bool(meta.get("deletionTimestamp")),
                    meta.get("uid", ""),
                )
            for name, attempt in list(e.creates.items()):
                if name in seen and seen[name][0] == attempt:
                    del e.creates[name]
            live = {uid for _, deleting, uid in seen.values() if not deleting}
            e.deletes &= live
            if not e.creates and not e.deletes:
                del self._jobs[key]
                return None
            return self._clock() - e.since

    def forget(self, key: Key) -> None:
        with self._lock:
            self._jobs.pop(key, None)


# How long a reconcile waits for a namespace's first list of a kind it reads from a watch.
SYNC_TIMEOUT_SECONDS = 60.0


class Informer(threading.Thread):
    """List, then watch, one kind of object in one namespace with a label selector, into an
    ObjectStore; `on_change(key)` for every job whose objects changed. Raw JSON throughout.

    The watch resumes from the last resourceVersion it saw (bookmarks keep it current on a quiet
    namespace), so a cut connection loses no event; a 410 Gone (the version compacted away) starts
    again from a fresh list, after which every job of the namespace is looked at again.
    """

    def __init__(
        self,
        list_call: Callable[..., Any],
        namespace: str,
        store: ObjectStore,
        on_change: Callable[[Key], None],
        selector: str = contract.LABEL_JOB,
    ) -> None:
        super().__init__(name=f"ti-watch-{getattr(list_call, '__name__', 'list')}-{namespace}", daemon=True)
        self.list_call, self.namespace, self.store = list_call, namespace, store
        self.on_change, self.selector = on_change, selector
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.resource_version: str | None = None
        self.relists = 0

    def wait_synced(self) -> None:
        """Block until the first list is in the store; a watch that never lists fails the reconcile."""
        if not self.synced.wait(SYNC_TIMEOUT_SECONDS):
            raise RuntimeError(f"the watch of {self.name} in {self.namespace} never listed")

    def run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                failures = 0
            except Exception as err:  # the API server went away, a connection was cut: resume
                if getattr(err, "status", None) == 410:
                    self.resource_version = None  # the version was compacted away: list again
                failures += 1
                log.warning("watch of %s in %s lost (%s); resuming", self.name, self.namespace, err)
                self.stopped.wait(min(5.0, 0.2 * 2**failures))

    def stop(self) -> None:
        self.stopped.set()

    def _list(self) -> None:
        response = self.list_call(self.namespace, label_selector=self.selector, _preload_content=False)
        data = json.loads(response.data)
        changed = self.store.replace(self.namespace, (slim(o) for o in data.get("items") or []))
        self.resource_version = data["metadata"]["resourceVersion"]
        self.relists += 1
        self.synced.set()
        for key in changed:
            self.on_change(key)

    def _watch(self) -> None:
        response = self.list_call(
            self.namespace,
            label_selector=self.selector,
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=(10, WATCH_SECONDS + 30),
        )
        try:
            for event in _lines(response):
                if self.stopped.is_set():
                    return
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.resource_version = None  # compacted: list again
                        return
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    self.resource_version = rv or self.resource_version
                    continue
                key = (
                    self.store.remove(self.namespace, obj)
                    if kind == "DELETED"
                    else self.store.upsert(self.namespace, slim(obj))
                )
                self.resource_version = rv or self.resource_version
                if key is not None:
                    self.on_change(key)
        finally:
            response.release_conn()


def _lines(response: Any) -> Iterator[Obj]:
    buffer = b""
    for chunk in response.stream(65536, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


def fresh_pods(core: Any, namespace: str, job: str) -> list[dict[str, Any]]:
    """A job's pods read from the API server, slimmed as the cache keeps them (raw JSON: the client's
    models cost more CPU than the request)."""
    response: Any = core.list_namespaced_pod(
        namespace, label_selector=f"{contract.LABEL_JOB}={job}", _preload_content=False
    )
    return [slim(p) for p in json.loads(response.data).get("items") or []]


def fresh_pod(core: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """One pod read from the API server, slimmed; None when there is none."""
    try:
        response: Any = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return slim(json.loads(response.data))
