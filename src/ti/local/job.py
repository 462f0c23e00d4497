"""Local mode: the same TFTrainingJob, rendered into the same pods, run here as processes (`ti.local`).

`train_instance_type='local'` (or `'local_gpu'`) needs no cluster and no Docker: each instance gets a
work directory standing in for /opt/ml; fetch, the training script and upload run as in a pod.

`LocalTrainingJob` is the operator's loop in miniature, with this machine as the node: it starts an
attempt's pods, reads them back as pod records, and lets `ti.operator.status.derive_status` decide,
so an exit code, a failure file, a kill or a timeout ends the same way as in a cluster: a platform
fault (exit code 128 or more, a deleted pod) restarts every instance up to runPolicy.backoffLimit,
a script's own error (1-127) fails the job at once, maxRunSeconds fails it with MaxRunExceeded.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ti import contract
from ti._sdk import sourcedir
from ti._sdk.logs import LogPrinter
from ti.api import Phase, TFTrainingJob, TFTrainingJobStatus, status_body
from ti.catalog import CATALOG_FILE_ENV, Catalog, load_catalog
from ti.job import error_for
from ti.local.runner import STOP_GRACE_SECONDS, LocalNode, LocalPod
from ti.operator.pods import read_pod
from ti.operator.reconcile import RETRY_BACKOFF_SECONDS
from ti.operator.render import render
from ti.operator.settings import OperatorConfig
from ti.operator.status import derive_status, instance_statuses, transition
from ti.reasons import Reason
from ti.session import Session

WORKDIR_ENV = "TI_LOCAL_WORKDIR"
_BUFFERED_LINES = 10_000
_POLL_SECONDS = 0.2


def default_workdir(name: str) -> Path:
    """Where the instances' /opt/ml trees go: $TI_LOCAL_WORKDIR/<job>, else <tmp>/ti-local/<job>."""
    root = os.environ.get(WORKDIR_ENV) or os.path.join(tempfile.gettempdir(), "ti-local")
    return Path(root) / name


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LocalTrainingJob:
    """A job running on this machine; the same handle as `ti.job.TrainingJob` (wait, describe, stop...)."""

    def __init__(self, job: TFTrainingJob, catalog: Catalog, session: Session, workdir: Path) -> None:
        self.job = job
        self.name = job.name
        self.session = session
        self.workdir = workdir
        self.catalog = catalog
        self.config = OperatorConfig(cos_region=session.cos_region, cos_endpoint=session.cos_endpoint)
        self.pods = render(job, catalog, self.config, cluster=False).pods  # a bad spec fails here
        self._lock = threading.Lock()
        self._buffer: collections.deque[tuple[str, str]] = collections.deque(maxlen=_BUFFERED_LINES)
        self._printer: LogPrinter | None = None
        self._tail = LogPrinter(echo=False)
        self._done = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._node = LocalNode(workdir, storage_env=session.storage_env(), on_output=self._on_output)
        self._current: list[LocalPod] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ti-local-{self.name}")
        self.board: Any = None

    @classmethod
    def start(
        cls, job: TFTrainingJob, catalog: Catalog | None, session: Session, *, workdir: Path | None = None
    ) -> LocalTrainingJob:
        """Render `job` and start its instances in the background."""
        local = cls(
            job,
            catalog or load_catalog(os.environ.get(CATALOG_FILE_ENV)),
            session,
            workdir or default_workdir(job.name),
        )
        local.workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"Training job {job.name} runs locally: {len(local.pods)} instance(s) in {local.workdir}",
            flush=True,
        )
        local._thread.start()
        return local

    # ---- the control loop -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._launch(0)
            while not self._step():
                self._stop.wait(_POLL_SECONDS)
        except BaseException as err:  # a bug of local mode's own: wait() raises it
            self._error = err
        finally:
            self._free()
            self._done.set()

    def _step(self) -> bool:
        """Read the pods, judge them as the operator does, act; True once the job has ended."""
        now = _now()
        records = [pod.record() for pod in self._current]
        if self._stop.is_set():
            return self._stopping(records, now)
        status, verdict = derive_status(self.job, records, now)
        self._set(status)
        if verdict.retry:
            policy = self.job.spec.run_policy
            self._note(
                f"training job {self.name}: restarting all instances (attempt {status.restart_count} of "
                f"runPolicy.backoffLimit {policy.backoff_limit}): {verdict.message}"
            )
            self._free()
            if not self._stop.wait(RETRY_BACKOFF_SECONDS):
                self._launch(status.restart_count)
            return False
        return status.phase is not None and status.phase.finished

    def _stopping(self, records: list[dict[str, Any]], now: datetime) -> bool:
        live = [pod for pod in self._current if not pod.done.is_set()]
        for pod in live:
            pod.delete()
        old = self.job.status
        generation = self.job.metadata.generation
        if live:
            self._set(transition(old, Phase.STOPPING, now=now, generation=generation))
            return False
        stopped = transition(
            old,
            Phase.STOPPED,
            reason=Reason.STOPPED,
            message="stopped on request",
            now=now,
            generation=generation,
        )
        attempt = stopped.restart_count
        stopped.instances = instance_statuses(self.job, [read_pod(r) for r in records], attempt)
        self._set(stopped)
        return True

    def _launch(self, attempt: int) -> None:
        pods = render(self.job, self.catalog, self.config, attempt, now=_now(), cluster=False).pods
        with self._lock:
            self.pods = pods
            self._current = self._node.start(pods)

    def _free(self) -> None:
        """Delete every pod still running (parameter servers, or all at a retry, a stop or a timeout)
        and wait until each has ended, so no process outlives its job."""
        for pod in self._current:
            if not pod.done.is_set():
                pod.delete()
        for pod in self._current:
            pod.wait(STOP_GRACE_SECONDS + 30)

    def _set(self, status: TFTrainingJobStatus) -> None:
        with self._lock:
            self.job.status = status

    def _on_output(self, pod: str, line: str) -> None:
        instance = _instance(self.name, pod)
        with self._lock:
            self._tail.line(instance, line)
            if self._printer is not None:
                self._printer.line(instance, line)
            else:
                self._buffer.append((instance, line))

    def _note(self, text: str) -> None:
        with self._lock:
            printer = self._printer
        if printer is not None:
            printer.note(text)
        else:
            print(text, flush=True)

    # ---- the TrainingJobHandle interface --------------------------------------------------------

    @property
    def phase(self) -> str:
        return str(self.describe()["status"]["phase"])

    @property
    def model_data(self) -> str:
        return contract.model_uri(self.job.spec.output_path, self.name)

    def describe(self) -> dict[str, Any]:
        """The job as a TFTrainingJob object, with the status local mode derived."""
        with self._lock:
            body = self.job.to_body()
            status = self.job.status
        body["status"] = status_body(status) if status is not None else {"phase": Phase.PENDING.value}
        body["status"].setdefault("phase", Phase.PENDING.value)
        return body

    def wait(
        self, logs: bool = True, *, tensorboard: bool = False, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Run to the end, printing the phase as it moves and, with `logs`, every instance's log; return
        the final object when it Completed, raise `TrainingJobFailed` (with the script's reason) or
        `TrainingJobStopped` otherwise. Ctrl-C stops the job: local jobs end with this process."""
        printer = LogPrinter(out)
        if logs:
            with self._lock:
                for instance, line in self._buffer:
                    printer.line(instance, line)
                self._buffer.clear()
        with self._lock:
            self._printer = printer if logs else None
        if tensorboard:
            self.tensorboard(out=out)
        shown: list[str] = []

        def show() -> dict[str, Any]:
            body = self.describe()
            status = body["status"]
            phase, reason = status["phase"], status.get("reason")
            line = f"{phase} ({reason})" if reason and reason != phase else phase
            if not shown or shown[-1] != line:
                printer.note(f"training job {self.name}: {line}" + ("" if shown else " (local)"))
                shown.append(line)
            return body

        try:
            show()
            while not self._done.wait(0.5):
                show()
        except KeyboardInterrupt:
            printer.note(f"\nStopping local training job {self.name} (local jobs end with this process)")
            self.stop(wait=True)
            raise
        finally:
            with self._lock:
                self._printer = None
            if self.board is not None:
                self.board.sync_once()
        if self._error is not None:
            raise self._error
        body = show()
        if body["status"]["phase"] == Phase.COMPLETED.value:
            return body
        raise error_for(body, self._tail.tail())

    def stop(self, wait: bool = False) -> dict[str, Any]:
        """Stop the instances (SIGTERM, then SIGKILL after a grace period); with `wait`, until ended."""
        with self._lock:
            self.job.spec.run_policy.stop = True
        self._stop.set()
        if wait:
            self._done.wait(STOP_GRACE_SECONDS + 60)
        return self.describe()

    def logs(self, follow: bool = False, instance: str | None = None, out: TextIO | None = None) -> None:
        """Print the instances' logs so far (from their work directories)."""
        printer = LogPrinter(out)
        for pod in self.pods:
            name = pod["metadata"]["name"]
            short = _instance(self.name, name)
            if instance not in (None, short, name) and f"worker-{instance}" != short:
                continue
            path = self.workdir / name / contract.LOG_FILE.removeprefix(contract.ML_ROOT + "/")
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    printer.line(short, line)

    def tensorboard(self, out: TextIO | None = None) -> Any:
        """TensorBoard on the instances' work directories (event files are read where they are)."""
        from ti._sdk.tensorboard import TensorBoard

        self.board = TensorBoard(self.workdir, out=out).start()
        return self.board


def prepare_manifest(job: TFTrainingJob, session: Session) -> TFTrainingJob:
    """Make a manifest runnable here: a cluster instance type becomes `local`, and a sourceDir that is
    a local directory (file:///path/to/code) is packed and stored as <outputPath>/<job>/source/."""
    spec = job.spec
    catalog = load_catalog(os.environ.get(CATALOG_FILE_ENV))
    itype = catalog.instance_types.get(spec.instance_type)
    if itype is None or not itype.local:
        print(f"instanceType {spec.instance_type} runs as 'local' on this machine", flush=True)
        spec.instance_type = "local"
    if spec.source_dir and spec.source_dir.startswith("file://"):
        directory = Path(spec.source_dir.removeprefix("file://"))
        if directory.is_dir():
            uri = contract.source_uri(spec.output_path, job.name)
            with tempfile.TemporaryDirectory(prefix="ti-source-") as tmp:
                archive = sourcedir.pack(directory, Path(tmp) / sourcedir.ARCHIVE_NAME)
                session.upload_file(archive, uri)
            spec.source_dir = uri
    return job


def _instance(job: str, pod: str) -> str:
    """`<job>-worker-0` → `worker-0`."""
    return pod.removeprefix(f"{job}-")
