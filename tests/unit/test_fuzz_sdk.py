"""The SDK's arguments fuzzed: whatever a user passes, `TensorFlow(...)` and `fit(..., wait=False)` either
work, and then submit a job the API model accepts, or raise the documented `ArgumentError` naming an
argument the user changed. No TypeError, KeyError, pydantic ValidationError or half-made job.

Each example starts from the TI document's working call and spoils one to three arguments with values drawn
from near-misses (wrong case, NUL bytes, huge numbers, unserializable objects) and plain junk.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.sdk_support import COS, RecordingSession, seed_args, write_source
from ti._sdk.arguments import ArgumentError
from ti.api import TFTrainingJob
from ti.catalog import load_catalog
from ti.tensorflow import TensorFlow

pytestmark = pytest.mark.unit

CATALOG = load_catalog()

SEED: dict[str, Any] = seed_args()

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(object()),
    st.just(Path("gpu")),
)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", "ü", "../..", "/", "x" * 5000, "\n", "cos://", "file://"]),
)
uri = st.one_of(
    st.builds(lambda p: f"{COS}/{p}", st.text(max_size=20)),
    st.sampled_from(
        [
            "cos://bucket/x",
            "cos://Bucket-1250000000/x",
            "s3://models-1250000000/x",
            "file:///tmp/x",
            "cos://models-1250000000/a\x00b",
            "cos://models-1250000000/" + "k" * 3000,
            "http://example.com/x",
        ]
    ),
    nasty_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)

ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "role": st.one_of(st.sampled_from(["trainer", "ti.role", "UPPER", "-x", "a" * 254]), nasty_text, junk),
    "train_instance_count": st.one_of(
        st.integers(-3, 1003), st.sampled_from([True, 2.0, "2", math.inf]), junk
    ),
    "train_instance_type": st.one_of(
        st.sampled_from([*CATALOG.instance_types, "ml.gn8.3xlarge112", "ML.GN8", "LOCAL"]), nasty_text, junk
    ),
    "py_version": st.one_of(st.sampled_from(["py3", "py2", "PY3", "py37"]), junk),
    "script_mode": st.one_of(st.sampled_from([True, False, 1, "True"]), junk),
    "framework_version": st.one_of(
        st.sampled_from([*CATALOG.frameworks, "2.0", "1.14", "9.9", "latest", "2.16.1"]), nasty_text, junk
    ),
    "entry_point": st.one_of(
        st.sampled_from(
            ["train.py", "util.py", "missing.py", "../train.py", "/etc/passwd", "gpu/code/train.py"]
        ),
        nasty_text,
        junk,
    ),
    "source_dir": st.one_of(
        st.sampled_from(["gpu/code", "gpu", "gpu/code/train.py", "nowhere", f"{COS}/src/sourcedir.tar.gz"]),
        uri,
        junk,
    ),
    "output_path": st.one_of(uri, junk),
    "checkpoint_path": st.one_of(uri, junk),
    "hyperparameters": st.one_of(
        st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,8}\Z"), json_values, max_size=4),
        st.dictionaries(nasty_text, json_values, max_size=3),
        st.dictionaries(st.sampled_from(["epochs", "lr"]), junk, max_size=2),
        st.just({"big": "v" * 5000}),
        st.just({f"k{i}": "1" for i in range(300)}),
        junk,
    ),
    "image_name": st.one_of(
        st.sampled_from(["registry/team/tf:2.16", "has space", " x", "x\n"]), nasty_text, junk
    ),
    "base_job_name": st.one_of(st.sampled_from(["my-job", "My_Job", "a" * 60, "-x"]), nasty_text, junk),
    "train_max_run": st.one_of(st.integers(-2, 31 * 86400), junk),
    "train_volume_size": st.one_of(st.integers(-2, 20000), junk),
    "metric_definitions": st.one_of(
        st.lists(
            st.fixed_dictionaries(
                {
                    "Name": st.one_of(st.sampled_from(["acc", "loss", "9x", ""]), nasty_text),
                    "Regex": nasty_text,
                }
            ),
            max_size=2,
        ),
        st.just([{"Name": "acc", "Regex": "acc=([0-9.]+)"}]),
        st.lists(junk, max_size=2),
        junk,
    ),
    "distributions": st.one_of(
        st.sampled_from(
            [
                None,
                {"parameter_server": {"enabled": True}},
                {"parameter_server": {"enabled": True, "count": 3}},
                {"parameter_server": {"enabled": "yes"}},
                {"multi_worker_mirrored_strategy": {"enabled": True}},
                {"parameter_server": {"enabled": True, "count": 2.5}},
            ]
        ),
        st.dictionaries(nasty_text, junk, max_size=2),
        junk,
    ),
}
FIT: dict[str, st.SearchStrategy[Any]] = {
    "inputs": st.one_of(
        uri,
        st.dictionaries(
            st.one_of(st.sampled_from(["train", "test", "TRAIN", "my-data", "1x"]), nasty_text),
            uri,
            max_size=3,
        ),
        junk,
    ),
    "job_name": st.one_of(st.sampled_from(["my-job-1", "My_Job", "j" * 51, "1abc"]), nasty_text, junk),
}
# Arguments whose errors may be reported under the name of a partner: the entry point is checked
# inside the source directory, the framework version against the image, the count against the
# distribution's needs.
PARTNERS = {
    "source_dir": {"entry_point"},
    "entry_point": {"source_dir"},
    "image_name": {"framework_version"},
    "train_instance_type": {
        "framework_version",
        "output_path",
        "checkpoint_path",
        "source_dir",
        "entry_point",
    },
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_source(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def blame(err: ArgumentError) -> str:
    return err.argument.split("[", 1)[0]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_only_argument_errors_come_out(project: Path, data: st.DataObject) -> None:
    spoiled = data.draw(st.lists(st.sampled_from(sorted(ARGUMENTS)), min_size=1, max_size=2, unique=True))
    args = {**SEED, **{name: data.draw(ARGUMENTS[name], label=name) for name in spoiled}}
    allowed = set(spoiled).union(*(PARTNERS.get(name, set()) for name in spoiled))
    session = RecordingSession()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # local mode warns about the local TensorFlow
            estimator = TensorFlow(session=session, **args)
    except ArgumentError as err:
        event("refused at construction")
        assert blame(err) in allowed, (spoiled, err.argument, str(err))
        assert str(err).startswith(f"{err.argument}: ") and err.fix
        assert session.calls == []
        return
    if estimator.local:
        event("local mode")
        return  # fit would train on this machine: the cluster path is the one under test
    fit = {name: data.draw(FIT[name], label=name) for name in FIT}
    try:
        estimator.fit(wait=False, **fit)
    except ArgumentError as err:
        event("refused by fit")
        assert blame(err) in {*FIT, *allowed}, (fit, err.argument, str(err))
        assert [c for c in session.calls if c[0] == "create_job"] == []
        return
    event("submitted")
    (created,) = [body for call, body in session.calls if call == "create_job"]
    job = TFTrainingJob.from_body(created)  # what the API server gets, the operator can read
    assert job.spec.instance_count == args["train_instance_count"]
    assert job.name == (fit["job_name"] or job.name)
