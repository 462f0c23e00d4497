"""Checks of the Estimator's arguments, run when it is built (and of fit's, before anything is created).

Paths and URIs (source_dir, output_path, fit's inputs) are checked in `ti._sdk.locations`. The
limits are the API models' (`ti.api.models`), so the SDK refuses exactly what the API server would.
Each check raises `ArgumentError` naming the argument, what is wrong with it and what to do instead,
so a mistake surfaces on the line that made it, not minutes later in a pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ti._sdk.naming import MAX_BASE_LENGTH, invalid_job_name, sanitize
from ti.api import Distribution, DistributionType, MetricDefinition
from ti.api.models import (
    DNS_SUBDOMAIN_MAX_LENGTH,
    DNS_SUBDOMAIN_PATTERN,
    HYPERPARAMETER_NAME_PATTERN,
    HYPERPARAMETER_VALUE_MAX_LENGTH,
    MAX_HYPERPARAMETERS,
    MAX_INSTANCES,
    MAX_PARAMETER_SERVERS,
    MAX_RUN_SECONDS,
    MAX_VOLUME_GB,
)
from ti.catalog import Catalog, InstanceType


class ArgumentError(ValueError):
    """A bad argument: `argument` names it; the message says what is wrong and how to fix it."""

    def __init__(self, argument: str, problem: str, fix: str) -> None:
        super().__init__(f"{argument}: {problem}. {fix}")
        self.argument = argument
        self.problem = problem
        self.fix = fix


def role(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ArgumentError(
            "role",
            f"got {value!r}, a role is required",
            "Pass the ServiceAccount the training pods run as, e.g. role='default'",
        )
    if len(value) > DNS_SUBDOMAIN_MAX_LENGTH or not re.match(DNS_SUBDOMAIN_PATTERN, value):
        raise ArgumentError(
            "role",
            f"{value!r} is not a Kubernetes ServiceAccount name (lower case letters, digits, '-' and '.')",
            "Here role names the ServiceAccount the training pods run as, e.g. role='default' or "
            "role='ti-training'",
        )
    return value


def instance_count(value: Any) -> int:
    return _whole(
        "train_instance_count",
        value,
        MAX_INSTANCES,
        "Pass the number of instances to train on, e.g. train_instance_count=1",
    )


def instance_type(value: Any, catalog: Catalog) -> InstanceType:
    if not isinstance(value, str) or not value:
        raise ArgumentError(
            "train_instance_type",
            f"got {value!r}",
            "Pass an instance type, e.g. train_instance_type='ML.GN8.3XLARGE112', or 'local' to train on "
            "this machine",
        )
    try:
        return catalog.instance_type(value, cluster=False)
    except ValueError:
        choices = sorted(catalog.instance_types)
        import difflib

        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise ArgumentError(
            "train_instance_type",
            f"unknown instance type {value!r}",
            f"{hint}Valid types: {', '.join(choices)}",
        ) from None


def py_version(value: Any) -> str:
    if value != "py3":
        problem = "Python 2 is not supported" if value == "py2" else f"got {value!r}"
        raise ArgumentError("py_version", problem, "Training scripts run on Python 3: py_version='py3'")
    return value


def script_mode(value: Any) -> bool:
    if value is not True:
        raise ArgumentError(
            "script_mode",
            f"got {value!r}; only script mode is supported (your script is run with TM_* variables)",
            "Pass script_mode=True, or leave it out",
        )
    return True


def framework_version(value: Any, image_name: str | None, catalog: Catalog, gpu: bool) -> str | None:
    if value is None:
        if image_name is None:
            raise ArgumentError(
                "framework_version",
                "neither framework_version nor image_name is set",
                f"Pass a preset TensorFlow version ({', '.join(sorted(catalog.frameworks))}) or a custom "
                "image_name",
            )
        return None
    if not isinstance(value, str):
        raise ArgumentError(
            "framework_version", f"got {value!r}", "Pass the version as a string, e.g. '1.14.0'"
        )
    if image_name is None:
        try:
            catalog.framework_image(value, gpu=gpu)
        except ValueError:
            raise ArgumentError(
                "framework_version",
                f"there is no preset TensorFlow image for version {value!r}",
                f"Choose one of {', '.join(sorted(catalog.frameworks))}, or pass image_name= a custom image",
            ) from None
    return value


def image_name(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip() or " " in value):
        raise ArgumentError(
            "image_name", f"got {value!r}", "Pass a container image reference, e.g. 'registry/team/tf:2.16'"
        )
    return value


def hyperparameters(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(
            "hyperparameters",
            f"got {type(value).__name__}",
            "Pass a dict, e.g. hyperparameters={'epochs': 10}",
        )
    if len(value) > MAX_HYPERPARAMETERS:
        raise ArgumentError(
            "hyperparameters",
            f"{len(value)} entries, at most {MAX_HYPERPARAMETERS} are allowed",
            "Pass the rest in a file in source_dir or in an input channel",
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not re.match(HYPERPARAMETER_NAME_PATTERN, key):
            raise ArgumentError(
                "hyperparameters",
                f"name {key!r} is not a valid option name",
                "Use letters, digits, '_', '.' and '-' (at most 128), starting with a letter or '_'; "
                "each becomes --name value",
            )
        try:
            result[key] = item if isinstance(item, str) else json.dumps(item)
        except (TypeError, ValueError):
            raise ArgumentError(
                "hyperparameters",
                f"the value of {key!r} is a {type(item).__name__}, which cannot be passed to the script",
                "Use strings, numbers, booleans, or lists and dicts of them (they are sent as JSON)",
            ) from None
        if len(result[key]) > HYPERPARAMETER_VALUE_MAX_LENGTH:
            raise ArgumentError(
                "hyperparameters",
                f"the value of {key!r} is {len(result[key])} characters long, at most "
                f"{HYPERPARAMETER_VALUE_MAX_LENGTH} are allowed",
                "Pass large settings in a file in source_dir or in an input channel",
            )
    return result


def _whole(argument: str, value: Any, limit: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ArgumentError(argument, f"got {value!r}, it must be a whole number from 1 to {limit}", example)
    return value


def train_max_run(value: Any) -> int:
    return _whole("train_max_run", value, MAX_RUN_SECONDS, "Pass seconds, e.g. train_max_run=86400")


def train_volume_size(value: Any) -> int:
    return _whole("train_volume_size", value, MAX_VOLUME_GB, "Pass GiB, e.g. train_volume_size=30")


def distributions(value: Any, count: int) -> Distribution:
    """TI/SageMaker style: {'parameter_server': {'enabled': True}} or
    {'multi_worker_mirrored_strategy': {'enabled': True}}; None is multi-worker mirrored."""
    fix = (
        "Pass {'parameter_server': {'enabled': True}} (optionally with 'count': N parameter servers) "
        "or {'multi_worker_mirrored_strategy': {'enabled': True}}"
    )
    if value is None:
        return Distribution()
    if not isinstance(value, Mapping):
        raise ArgumentError("distributions", f"got {type(value).__name__}", fix)
    known = {"parameter_server", "multi_worker_mirrored_strategy"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ArgumentError("distributions", f"unsupported distribution {unknown[0]!r}", fix)
    enabled = []
    for key in sorted(value):
        options = value[key]
        if not isinstance(options, Mapping) or not isinstance(options.get("enabled", False), bool):
            raise ArgumentError("distributions", f"{key!r} must map to {{'enabled': True}}", fix)
        if options.get("enabled"):
            enabled.append(key)
    if len(enabled) > 1:
        raise ArgumentError("distributions", "more than one distribution is enabled", "Enable exactly one")
    if enabled == ["parameter_server"]:
        ps = value["parameter_server"]
        extra = sorted(set(ps) - {"enabled", "count"})
        if extra:
            raise ArgumentError("distributions", f"unknown parameter_server option {extra[0]!r}", fix)
        ps_count = ps.get("count", 1)
        if (
            isinstance(ps_count, bool)
            or not isinstance(ps_count, int)
            or not 1 <= ps_count <= MAX_PARAMETER_SERVERS
        ):
            raise ArgumentError(
                "distributions",
                f"parameter_server count {ps_count!r} must be a whole number from 1 to {MAX_PARAMETER_SERVERS}",
                "Pass e.g. {'parameter_server': {'enabled': True, 'count': 1}}",
            )
        return Distribution(type=DistributionType.PARAMETER_SERVER, parameter_server_count=ps_count)
    return Distribution()


def metric_definitions(value: Any) -> list[MetricDefinition]:
    fix = "Pass a list like [{'Name': 'accuracy', 'Regex': 'accuracy: ([0-9.]+)'}]"
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ArgumentError("metric_definitions", f"got {type(value).__name__}", fix)
    result = []
    for item in value:
        if not isinstance(item, Mapping):
            raise ArgumentError("metric_definitions", f"entry {item!r} is not a dict", fix)
        lowered = {str(k).lower(): v for k, v in item.items()}
        name, regex = lowered.get("name"), lowered.get("regex")
        if not isinstance(name, str) or not isinstance(regex, str):
            raise ArgumentError(
                "metric_definitions", f"entry {dict(item)!r} needs a 'Name' and a 'Regex'", fix
            )
        try:
            result.append(MetricDefinition(name=name, regex=regex))
        except ValueError as err:
            problem = str(err).splitlines()[-1].strip() if str(err) else repr(err)
            if "Value error," in problem:
                problem = problem.split("Value error,", 1)[1].split("[type=")[0].strip()
            raise ArgumentError(
                "metric_definitions",
                f"metric {name!r}: {problem}",
                "The value must be the regex's first group",
            ) from None
    return result


def base_job_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or sanitize(value) != value:
        raise ArgumentError(
            "base_job_name",
            f"{value!r} is not a valid job name prefix",
            f"Use lower case letters, digits and '-', starting with a letter, at most {MAX_BASE_LENGTH} "
            f"characters, e.g. {sanitize(str(value)) or 'my-job'!r}",
        )
    return value


def job_name(value: Any) -> str | None:
    if value is None:
        return None
    problem = invalid_job_name(value) if isinstance(value, str) else f"got {value!r}"
    if problem:
        raise ArgumentError(
            "job_name",
            f"{value!r} cannot name a training job: {problem}",
            f"Pass e.g. job_name={sanitize(str(value), 50) or 'my-job'!r}, or leave it out for a "
            "generated name",
        )
    return value


# A label value: the LocalQueue's name as Kueue reads it from the job's kueue.x-k8s.io/queue-name.
_QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def queue_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _QUEUE_NAME.match(value):
        raise ArgumentError(
            "queue_name",
            f"{value!r} is not the name of a Kueue LocalQueue",
            "Pass the LocalQueue of your namespace (`kubectl get localqueues`), e.g. queue_name='main': "
            "lower case letters, digits, '-' and '.', at most 63 characters",
        )
    return value
