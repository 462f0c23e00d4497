"""Job handles: `TrainingJobHandle`, what every handle on a training job offers, and `TrainingJob`,
the handle on one TFTrainingJob in the cluster (local mode's is `ti.local.job.LocalTrainingJob`)."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Protocol, TextIO

from ti import contract
from ti._sdk.logs import JobLogs, LogPrinter, print_logs
from ti.api import Phase
from ti.session import Session, SessionError

FINISHED = {Phase.COMPLETED.value, Phase.FAILED.value, Phase.STOPPED.value}


class TrainingJobError(RuntimeError):
    """A training job ended without completing; `reason` and `failure_reason` say why."""

    def __init__(
        self,
        name: str,
        phase: str,
        reason: str | None,
        failure_reason: str | None,
        log_tail: dict[str, list[str]] | None = None,
    ) -> None:
        self.name = name
        self.phase = phase
        self.reason = reason
        self.failure_reason = failure_reason
        self.log_tail = log_tail or {}
        message = f"training job {name} {phase.lower()}"
        if reason:
            message += f" ({reason})"
        if failure_reason:
            message += f": {failure_reason.strip()}"
        lines = [f"[{instance}] {line}" for instance, tail in self.log_tail.items() for line in tail]
        if lines:
            message += "\nlast log lines:\n" + "\n".join(lines)
        super().__init__(message)


class TrainingJobFailed(TrainingJobError):
    """The job ended in phase Failed."""


class TrainingJobStopped(TrainingJobError):
    """The job was stopped (phase Stopped) before it completed."""


def phase_of(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def error_for(body: dict[str, Any], log_tail: dict[str, list[str]] | None = None) -> TrainingJobError:
    status = body.get("status") or {}
    name = body["metadata"]["name"]
    phase = status.get("phase") or "Unknown"
    cls = TrainingJobStopped if phase == Phase.STOPPED.value else TrainingJobFailed
    return cls(name, phase, status.get("reason"), status.get("failureReason"), log_tail)


class TrainingJobHandle(Protocol):
    """A training job, in a cluster or on this machine: what `Estimator.latest_training_job` holds."""

    name: str
    board: Any  # the TensorBoard started by wait(tensorboard=True) or tensorboard(), if any

    @property
    def phase(self) -> str | None:
        """The job's phase now (Pending, Training, Completed, ...)."""
        ...

    @property
    def model_data(self) -> str:
        """URI of the job's model.tar.gz."""
        ...

    def describe(self) -> dict[str, Any]:
        """The TFTrainingJob object: metadata, spec and status."""
        ...

    def wait(
        self, logs: bool = True, *, tensorboard: bool = False, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Follow the job to its end; the final object if Completed, else raise `TrainingJobError`."""
        ...

    def stop(self, wait: bool = False) -> dict[str, Any]:
        """Stop the job; with `wait`, return once it has ended."""
        ...

    def logs(self, follow: bool = False, instance: str | None = None, out: TextIO | None = None) -> None:
        """Print the job's logs, prefixed by instance."""
        ...

    def tensorboard(self, out: TextIO | None = None) -> Any:
        """Start TensorBoard on the job's event files; print its URL."""
        ...


class TrainingJob:
    """One training job, by name, in its session's namespace."""

    def __init__(self, name: str, session: Session | None = None) -> None:
        self.name = name
        self.session = session if session is not None else Session()
        self.board: Any = None  # the TensorBoard started by wait(tensorboard=True) or tensorboard()

    def __repr__(self) -> str:
        return f"TrainingJob({self.name!r}, namespace={self.session.namespace!r})"

    def describe(self) -> dict[str, Any]:
        """The TFTrainingJob object as the API server has it: metadata, spec and status."""
        return self.session.get_job(self.name)

    @property
    def phase(self) -> str | None:
        return phase_of(self.describe())

    @property
    def model_data(self) -> str:
        """URI of the job's model.tar.gz (where it is, or will be once the job completes)."""
        body = self.describe()
        return str(
            (body.get("status") or {}).get("modelArtifacts")
            or contract.model_uri(body["spec"]["outputPath"], self.name)
        )

    def wait(
        self, logs: bool = True, *, tensorboard: bool = False, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Follow the job until it ends: print its phase transitions and, with `logs`, every instance's
        log. Returns the final object when Completed; raises `TrainingJobFailed` or
        `TrainingJobStopped` with the reason and the last log lines otherwise. Ctrl-C stops following,
        not the job."""
        printer = LogPrinter(out)
        body = self.describe()
        streamer = JobLogs(self.session, self.name, printer).start() if logs else None
        if tensorboard:
            self.board = self.tensorboard(out=out)
        drain = 30.0
        try:
            body = self._watch_until_finished(body, printer)
        except KeyboardInterrupt:
            drain = 1.0
            printer.note(
                f"\nStopped following training job {self.name}; it keeps running. Follow it again with\n"
                f"  TensorFlow.attach(training_job_name={self.name!r})   or   ti logs -f {self.name}"
            )
            raise
        finally:
            if streamer is not None:
                streamer.finish(drain)
            if self.board is not None:
                self.board.sync_once()
        if phase_of(body) == Phase.COMPLETED.value:
            return body
        tail = printer.tail() if logs else self._log_tail()
        raise error_for(body, tail)

    def _watch_until_finished(self, body: dict[str, Any], printer: LogPrinter) -> dict[str, Any]:
        last: str | None = None

        def show(obj: dict[str, Any]) -> None:
            nonlocal last
            phase = phase_of(obj) or Phase.PENDING.value
            if phase != last:
                status = obj.get("status") or {}
                extra = f" ({status['reason']})" if status.get("reason") else ""
                printer.note(f"{datetime.now():%H:%M:%S} training job {self.name}: {phase}{extra}")
                last = phase

        show(body)
        version = body["metadata"].get("resourceVersion")
        while phase_of(body) not in FINISHED:
            try:
                for kind, obj in self.session.watch_job(self.name, version, timeout_seconds=30):
                    if kind == "ERROR":
                        body = self.describe()
                        version = body["metadata"].get("resourceVersion")
                        show(body)
                        break
                    version = obj.get("metadata", {}).get("resourceVersion") or version
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        raise TrainingJobFailed(
                            self.name, "Deleted", "Deleted", "the job was deleted while running"
                        )
                    body = obj
                    show(body)
                    if phase_of(body) in FINISHED:
                        break
            except SessionError:
                # A dropped watch: read the object again and carry on from there.
                body = self.describe()
                version = body["metadata"].get("resourceVersion")
                show(body)
        return body

    def _log_tail(self) -> dict[str, list[str]]:
        tails: dict[str, list[str]] = {}
        try:
            printer = LogPrinter(echo=False)
            print_logs(self.session, self.name, printer)
            tails = printer.tail()
        except SessionError:
            pass
        return tails

    def stop(self, wait: bool = False) -> dict[str, Any]:
        """Ask the operator to stop the job (its pods get SIGTERM and time to upload what they have);
        with `wait`, return once the job has ended (phase Stopped, or whatever it reached first)."""
        body = self.session.patch_job(self.name, {"spec": {"runPolicy": {"stop": True}}})
        if not wait:
            return body
        try:
            return self.wait(logs=False, out=io.StringIO())
        except TrainingJobError:
            return self.describe()

    def logs(self, follow: bool = False, instance: str | None = None, out: TextIO | None = None) -> None:
        """Print the job's logs so far, prefixed by instance; with `follow`, keep printing until it ends."""
        printer = LogPrinter(out)
        if not follow:
            print_logs(
                self.session,
                self.name,
                printer,
                instance=instance,
                fallback=lambda: self._stored_logs(printer),
            )
            return
        streamer = JobLogs(self.session, self.name, printer, instance=instance).start()
        try:
            self._watch_until_finished(self.describe(), LogPrinter(echo=False))
        finally:
            streamer.finish()

    def _stored_logs(self, printer: LogPrinter) -> bool:
        # With its pods gone, a job's logs are still stored with its output (<outputPath>/<job>/logs/).
        body = self.describe()
        prefix = f"{contract.job_prefix(body['spec']['outputPath'], self.name)}/logs"
        try:
            store = self.session.store(prefix)
            found = False
            for info in store.list(prefix):
                text = store.get_bytes(info.uri).decode("utf-8", errors="replace")
                host = info.relative.removesuffix(".log")
                instance = host.removeprefix(f"{self.name}-")
                for line in text.splitlines():
                    printer.line(instance, line)
                found = True
            return found
        except Exception as err:
            printer.note(f"(no pods left, and the stored logs under {prefix} could not be read: {err})")
            return False

    def tensorboard(self, out: TextIO | None = None) -> Any:
        """Start TensorBoard on a local copy of the job's event files, kept in sync; print its URL."""
        from ti._sdk.tensorboard import TensorBoard

        body = self.describe()
        self.board = TensorBoard.for_job(body, self.session, out=out).start()
        return self.board
