"""attach rebuilds the estimator through its constructor: every argument of the TI document's call (and the
others a TI user may pass) comes back from the live job as it went in."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from tests.unit.sdk_support import COS, RecordingSession, seed_args, write_source
from ti._sdk.arguments import ArgumentError
from ti.api import TFTrainingJob
from ti.estimator import Estimator
from ti.job import TrainingJob
from ti.tensorflow import TensorFlow

pytestmark = pytest.mark.unit

# One value other than the default for each argument; source_dir comes back as the uploaded archive.
CHANGED: dict[str, Any] = {
    "role": "ti-training",
    "train_instance_count": 3,
    "train_instance_type": "TI.S.LARGE.POST",
    "py_version": "py3",
    "script_mode": True,
    "framework_version": "2.0.0",
    "entry_point": "util.py",
    "output_path": "cos://other-1250000000/models",
    "source_dir": "./gpu/code",
    "hyperparameters": {"epochs": "3", "layers": "[64, 32]"},
    "image_name": "registry.example/team/tf:2.16",
    "base_job_name": "mnist",
    "train_max_run": 7200,
    "train_volume_size": 100,
    "checkpoint_path": f"{COS}/checkpoints",
    "metric_definitions": [{"Name": "accuracy", "Regex": "accuracy: ([0-9.]+)"}],
    "distributions": {"parameter_server": {"enabled": True, "count": 2}},
    "queue_name": "gpu-main",
}


# Arguments with one valid value: the TI document passes them, so attach must give them back.
ONLY_VALUE = ("py_version", "script_mode")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_source(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_argument_is_listed_once_and_attach_knows_each() -> None:
    assert set(CHANGED) == set(TensorFlow.argument_names())
    own = [p for p in inspect.signature(Estimator.__init__).parameters if p not in ("self", "session")]
    assert Estimator.argument_names() == tuple(own)
    job = TFTrainingJob.from_body(
        {
            "metadata": {"name": "j"},
            "spec": {"instanceType": "TI.S.LARGE.POST", "frameworkVersion": "2.16", "entryPoint": "t.py",
                     "sourceDir": f"{COS}/s.tar.gz", "outputPath": f"{COS}/o"},
        }
    )  # fmt: skip
    assert set(TensorFlow._init_params_from_job(job)) == set(TensorFlow.argument_names())
    assert set(Estimator._init_params_from_job(job)) == set(Estimator.argument_names())


@pytest.mark.parametrize("argument", sorted(CHANGED))
def test_attach_round_trips(argument: str, project: Path) -> None:
    session = RecordingSession()
    est = TensorFlow(session=session, **seed_args(**{argument: CHANGED[argument]}))
    est.fit(f"{COS}/data", wait=False, job_name="round-trip")
    again = TensorFlow.attach("round-trip", session=session, wait=False)

    expected = est.arguments()
    expected["source_dir"] = f"{expected['output_path']}/round-trip/source/sourcedir.tar.gz"
    assert again.arguments() == expected
    if argument not in ONLY_VALUE:  # the test changes what it checks
        assert est.arguments()[argument] != TensorFlow(session=session, **seed_args()).arguments()[argument]
    assert isinstance(again.latest_training_job, TrainingJob)
    assert again.session is session


def test_attach_checks_what_it_rebuilds(project: Path) -> None:
    session = RecordingSession()
    TensorFlow(session=session, **seed_args()).fit(f"{COS}/data", wait=False, job_name="no-source")
    del session.jobs["no-source"]["spec"]["sourceDir"]
    with pytest.raises(ArgumentError, match=r"no-source has no spec\.sourceDir"):
        TensorFlow.attach("no-source", session=session, wait=False)
