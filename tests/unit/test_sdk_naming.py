"""Default job names: image name + timestamp, DNS-1123 safe, unique."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from ti._sdk.naming import base_name_from_image, default_job_name, invalid_job_name, sanitize
from ti.api.models import JOB_NAME_MAX_LENGTH, JOB_NAME_PATTERN

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 3, 4, 567891, tzinfo=timezone.utc)


def test_seed_format() -> None:
    assert default_job_name("tensorflow", datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)) == (
        "tensorflow-2030-01-02-03-04-05-006"
    )


@pytest.mark.parametrize(
    ("image", "base"),
    [
        ("tensorflow/tensorflow:1.14.0-gpu-py3", "tensorflow"),
        ("ccr.ccs.tencentyun.com/ti/TF_Custom:2.16", "tf-custom"),
        ("registry:5000/team/trainer@sha256:abc", "trainer"),
        ("9lives", "lives"),
        ("___", "job"),
        ("a" * 80, "a" * 26),
    ],
)
def test_base_name_from_image(image: str, base: str) -> None:
    assert base_name_from_image(image) == base


def test_names_are_valid_job_names_even_from_long_bases() -> None:
    name = default_job_name("x" * 200 + "-", NOW)
    assert len(name) <= JOB_NAME_MAX_LENGTH
    assert re.match(JOB_NAME_PATTERN, name)
    assert invalid_job_name(name) is None


def test_names_are_unique_within_one_millisecond() -> None:
    names = [default_job_name("tensorflow", NOW) for _ in range(50)]
    assert len(set(names)) == 50
    assert all(invalid_job_name(n) is None for n in names)


def test_sanitize() -> None:
    assert sanitize("My_Job  Name--2") == "my-job-name-2"
    assert sanitize("-1abc-") == "abc"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("Mnist", "lower case"),
        ("mnist-", "end with"),
        ("a" * 51, "limit is 50"),
        ("1job", "start with"),
    ],
)
def test_invalid_job_names(name: str, problem: str) -> None:
    reason = invalid_job_name(name)
    assert reason is not None and problem in reason
