"""Local mode: the same TFTrainingJob, rendered into the same pods, run here as processes (`ti.local`).

`train_instance_type='local'` (or `'local_gpu'`) needs no cluster and no Docker: each instance gets a
work directory standing in for /opt/ml; fetch, the training script and upload run as in a pod.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ti import contract
from ti._sdk import sourcedir
from ti._sdk.logs import LogPrinter
from ti.api import Phase, TFTrainingJob
from ti.catalog import CATALOG_FILE_ENV, Catalog, load_catalog
from ti.job import TrainingJobFailed, TrainingJobStopped
from ti.local.runner import InstanceResult, LocalRunner
from ti.operator.render import render
from ti.operator.settings import OperatorConfig
from ti.session import Session

WORKDIR_ENV = "TI_LOCAL_WORKDIR"
_BUFFERED_LINES = 10_000


def default_workdir(name: str) -> Path:
    """Where the instances' /opt/ml trees go: $TI_LOCAL_WORKDIR/<job>, else <tmp>/ti-local/<job>."""
    root = os.environ.get(WORKDIR_ENV) or os.path.join(tempfile.gettempdir(), "ti-local")
    return Path(root) / name


class LocalTrainingJob:
    """A job running on this machine; the same handle as `ti.job.TrainingJob` (wait, describe, stop...)."""

    def __init__(self, job: TFTrainingJob, catalog: Catalog, session: Session, workdir: Path) -> None:
        self.job = job
        self.name = job.name
        self.session = session
        self.workdir = workdir
        config = OperatorConfig(cos_region=session.cos_region, cos_endpoint=session.cos_endpoint)
        self.pods = render(job, catalog, config, cluster=False).pods
        self._lock = threading.Lock()
        self._buffer: collections.deque[tuple[str, str]] = collections.deque(maxlen=_BUFFERED_LINES)
        self._printer: LogPrinter | None = None
        self._tail = LogPrinter(echo=False)
        self._done = threading.Event()
        self._results: list[InstanceResult] = []
        self._error: BaseException | None = None
        self._stopped = False
        self._started = time.monotonic()
        self._finished: float | None = None
        self._runner = LocalRunner(
            self.pods, workdir, storage_env=session.storage_env(), on_output=self._on_output
        )
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

    def _run(self) -> None:
        try:
            self._results = self._runner.run(timeout=self.job.spec.max_run_seconds)
        except BaseException as err:
            self._error = err
        finally:
            self._finished = time.monotonic()
            self._done.set()

    def _on_output(self, pod: str, line: str) -> None:
        instance = _instance(self.name, pod)
        with self._lock:
            self._tail.line(instance, line)
            if self._printer is not None:
                self._printer.line(instance, line)
            else:
                self._buffer.append((instance, line))

    # ---- the TrainingJob interface ------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return str(self.describe()["status"]["phase"])

    @property
    def model_data(self) -> str:
        return contract.model_uri(self.job.spec.output_path, self.name)

    def describe(self) -> dict[str, Any]:
        """The job as a TFTrainingJob object, with the status local mode knows."""
        body = self.job.to_body()
        body["status"] = self._status()
        return body

    def _status(self) -> dict[str, Any]:
        if not self._done.is_set():
            return {"phase": Phase.TRAINING.value, "instances": []}
        spec = self.job.spec
        instances = [
            {"name": r.name, "role": r.role, "index": r.index, "exitCode": r.main_exit_code,
             "phase": "Succeeded" if r.succeeded else "Failed"}
            for r in self._results
        ]  # fmt: skip
        status: dict[str, Any] = {"instances": instances}
        if self._finished is not None:
            status["billableSeconds"] = int(self._finished - self._started)
        failed = [r for r in self._results if not r.succeeded and r.role != contract.ROLE_PS]
        if self._stopped:
            status.update(phase=Phase.STOPPED.value, reason="Stopped")
        elif self._error is not None:
            status.update(phase=Phase.FAILED.value, reason="LocalModeError", failureReason=str(self._error))
        elif failed or not self._results:
            first = failed[0] if failed else None
            status.update(
                phase=Phase.FAILED.value,
                reason=_reason(first),
                failureReason=(first.failure_reason if first else None) or "no instance ran",
            )
        else:
            chief = next((r for r in self._results if r.role == contract.ROLE_WORKER and r.index == 0), None)
            status.update(
                phase=Phase.COMPLETED.value,
                reason="Completed",
                modelArtifacts=contract.model_uri(spec.output_path, self.name),
                outputData=contract.output_data_uri(spec.output_path, self.name),
                metrics=dict(chief.metrics) if chief else {},
            )
        return status

    def wait(
        self, logs: bool = True, *, tensorboard: bool = False, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Run to the end, printing every instance's log with `logs`; return the final object when it
        Completed, raise `TrainingJobFailed` (with the script's reason) otherwise. Ctrl-C stops it."""
        printer = LogPrinter(out)
        printer.note(f"training job {self.name}: Training (local)")
        if logs:
            with self._lock:
                for instance, line in self._buffer:
                    printer.line(instance, line)
                self._buffer.clear()
                self._printer = printer
        if tensorboard:
            self.tensorboard(out=out)
        try:
            while not self._done.wait(0.5):
                pass
        except KeyboardInterrupt:
            printer.note(f"\nStopping local training job {self.name} (local jobs end with this process)")
            self.stop()
            raise
        finally:
            with self._lock:
                self._printer = None
            if self.board is not None:
                self.board.sync_once()
        body = self.describe()
        status = body["status"]
        reason = status.get("reason")
        extra = f" ({reason})" if reason and reason != status["phase"] else ""
        printer.note(f"training job {self.name}: {status['phase']}{extra}")
        if status["phase"] == Phase.COMPLETED.value:
            return body
        error = TrainingJobStopped if status["phase"] == Phase.STOPPED.value else TrainingJobFailed
        raise error(
            self.name, status["phase"], status.get("reason"), status.get("failureReason"), self._tail.tail()
        )

    def stop(self, wait: bool = False) -> dict[str, Any]:
        """Stop the instances (SIGTERM, then SIGKILL after a grace period)."""
        self._stopped = True
        self._runner.stop(grace_seconds=5.0)
        if wait:
            self._done.wait(60)
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


def _reason(result: InstanceResult | None) -> str:
    if result is None:
        return "TrainingFailed"
    if result.fetch_exit_code not in (None, 0):
        return "DownloadFailed"
    if result.main_exit_code == 0 and result.upload_exit_code not in (None, 0):
        return "UploadFailed"
    return "TrainingFailed"
