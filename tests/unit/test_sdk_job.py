"""TrainingJob and TensorBoard against an injected Session: Ctrl-C, phase transitions, event-file sync."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ti._sdk.tensorboard import TensorBoard
from ti.job import TrainingJob, TrainingJobFailed
from ti.session import Session

pytestmark = pytest.mark.unit


def job_body(phase: str | None, version: str, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "mnist", "resourceVersion": version},
        "spec": {"outputPath": "cos://out-1250000000/models"},
    }
    if phase:
        body["status"] = {"phase": phase, **status}
    return body


class ScriptedSession(Session):
    """get_job returns the first body; watch_job replays `events`, then raises `then` if set."""

    def __init__(
        self, first: dict[str, Any], events: list[tuple[str, dict[str, Any]]], then: Any = None
    ) -> None:
        super().__init__(namespace="team-a")
        self.first = first
        self.events = events
        self.then = then
        self.watched_from: list[str | None] = []

    def get_job(self, name: str) -> dict[str, Any]:
        return self.first

    def watch_job(
        self, name: str, resource_version: str | None = None, timeout_seconds: int = 60
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(resource_version)
        yield from self.events
        if self.then is not None:
            raise self.then


def test_wait_prints_each_transition_once_and_raises_with_the_reason() -> None:
    session = ScriptedSession(
        job_body("Starting", "1"),
        [
            ("MODIFIED", job_body("Starting", "2")),
            ("BOOKMARK", {"metadata": {"resourceVersion": "3"}}),
            ("MODIFIED", job_body("Training", "4")),
            ("MODIFIED", job_body("Failed", "5", reason="TrainingFailed", failureReason="OOM in epoch 3")),
        ],
    )
    out = io.StringIO()
    with pytest.raises(TrainingJobFailed, match=r"mnist failed \(TrainingFailed\): OOM in epoch 3"):
        TrainingJob("mnist", session).wait(logs=False, out=out)
    phases = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    assert phases == ["Starting", "Training", "Failed (TrainingFailed)"]
    assert session.watched_from == ["1"]


def test_ctrl_c_leaves_the_job_running_and_says_how_to_attach() -> None:
    session = ScriptedSession(job_body("Training", "7"), [], then=KeyboardInterrupt())
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        TrainingJob("mnist", session).wait(logs=False, out=out)
    assert "it keeps running" in out.getvalue()
    assert "TensorFlow.attach(training_job_name='mnist')" in out.getvalue()
    assert "ti logs -f mnist" in out.getvalue()


def test_a_deleted_job_ends_the_wait() -> None:
    session = ScriptedSession(job_body("Training", "1"), [("DELETED", job_body("Training", "2"))])
    with pytest.raises(TrainingJobFailed, match="deleted"):
        TrainingJob("mnist", session).wait(logs=False, out=io.StringIO())


def test_tensorboard_keeps_a_local_copy_of_the_event_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ckpt = tmp_path / "ckpt" / "train"
    ckpt.mkdir(parents=True)
    (ckpt / "events.out.tfevents.1").write_bytes(b"e1")
    body = {
        "metadata": {"name": "mnist"},
        "spec": {"outputPath": f"file://{out}", "checkpointPath": f"file://{tmp_path / 'ckpt'}"},
    }
    board = TensorBoard.for_job(body, Session(namespace="x"), out=io.StringIO())
    board.sync_once()
    assert (board.logdir / "checkpoints-0" / "train" / "events.out.tfevents.1").read_bytes() == b"e1"
    assert not (board.logdir / "output-0").exists()  # the job has not uploaded its output yet

    (ckpt / "events.out.tfevents.2").write_bytes(b"e2")
    archive = out / "mnist" / "output" / "output.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        data = b"final"
        info = tarfile.TarInfo("tensorboard/events.out.tfevents.3")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    board.sync_once()
    assert (board.logdir / "checkpoints-0" / "train" / "events.out.tfevents.2").read_bytes() == b"e2"
    assert (board.logdir / "output-0" / "tensorboard" / "events.out.tfevents.3").read_bytes() == b"final"
    board.remove_copy()


def test_both_handles_offer_the_training_job_handle(tmp_path: Path) -> None:
    # mypy checks the types where fit() assigns either handle; this checks the same surface at run time.
    import inspect

    from ti.api import TFTrainingJob
    from ti.catalog import load_catalog
    from ti.job import TrainingJobHandle
    from ti.local.job import LocalTrainingJob

    members = [m for m in vars(TrainingJobHandle) if not m.startswith("_")]
    assert {"phase", "model_data", "describe", "wait", "stop", "logs", "tensorboard"} <= set(members)
    for cls in (TrainingJob, LocalTrainingJob):
        for member in members:
            ours, theirs = (
                inspect.getattr_static(TrainingJobHandle, member),
                inspect.getattr_static(cls, member),
            )
            if callable(ours):
                assert inspect.signature(theirs) == inspect.signature(ours), (cls, member)
            else:
                assert isinstance(theirs, property), (cls, member)
    job = TFTrainingJob.from_body(
        {
            "metadata": {"name": "mnist"},
            "spec": {"instanceType": "local", "frameworkVersion": "2.16", "entryPoint": "train.py",
                     "outputPath": f"file://{tmp_path}/out"},
        }
    )  # fmt: skip
    local = LocalTrainingJob(job, load_catalog(), Session(namespace="x"), tmp_path / "work")
    assert (local.name, local.phase, local.board) == ("mnist", "Pending", None)
    assert local.model_data == f"file://{tmp_path}/out/mnist/output/model.tar.gz"
