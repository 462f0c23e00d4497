"""Checks of the Estimator's arguments, run when it is built (and of fit's, before anything is created).

Each check raises `ArgumentError` naming the argument, what is wrong with it and what to do instead,
so a mistake surfaces on the line that made it, not minutes later in a pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ti import contract
from ti._sdk.naming import MAX_BASE_LENGTH, invalid_job_name, sanitize
from ti.api import Distribution, DistributionType, MetricDefinition
from ti.api.models import MAX_INSTANCES
from ti.catalog import Catalog, InstanceType
from ti.storage.errors import InvalidURIError
from ti.storage.uri import parse_uri

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HYPERPARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_RUN_LIMIT = 30 * 86400
MAX_VOLUME_GB = 16384
# TFTrainingJobSpec.hyperparameters: at most 256 entries of at most 4096 characters each.
MAX_HYPERPARAMETERS = 256
MAX_HYPERPARAMETER_VALUE = 4096


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
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ArgumentError(
            "role",
            f"{value!r} is not a Kubernetes ServiceAccount name (lower case letters, digits, '-' and '.')",
            "Here role names the ServiceAccount the training pods run as, e.g. role='default' or "
            "role='ti-training'",
        )
    return value


def instance_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCES:
        raise ArgumentError(
            "train_instance_count",
            f"got {value!r}, it must be a whole number from 1 to {MAX_INSTANCES}",
            "Pass the number of instances to train on, e.g. train_instance_count=1",
        )
    return value


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


def _remote(value: str) -> bool:
    return "://" in value and not value.startswith("file://")


def source(entry_point: Any, source_dir: Any) -> tuple[str, str | None]:
    """The entry point relative to the source directory, and the directory (a local path or a URI)."""
    if not isinstance(entry_point, str) or not entry_point:
        raise ArgumentError(
            "entry_point",
            f"got {entry_point!r}, the training script is required",
            "Pass the script to run, e.g. entry_point='train.py' (with source_dir='code')",
        )
    if source_dir is not None and not isinstance(source_dir, str | Path):
        raise ArgumentError(
            "source_dir", f"got {source_dir!r}", "Pass a directory path, e.g. source_dir='code'"
        )
    if source_dir is not None and _remote(str(source_dir)):
        _uri("source_dir", str(source_dir), cluster=True)
        return entry_point, str(source_dir)
    if source_dir is None:
        script = Path(entry_point)
        if not _is_file(script):
            raise ArgumentError(
                "entry_point",
                f"{entry_point!r} is not a file (looked in {Path.cwd()})",
                "Pass the path of your training script, or its name together with source_dir",
            )
        return script.name, str(script.resolve().parent)
    directory = Path(str(source_dir).removeprefix("file://"))
    if not _is_dir(directory):
        raise ArgumentError(
            "source_dir",
            f"{str(source_dir)!r} is not a directory (looked in {Path.cwd()})",
            "Pass the directory holding your training script and its modules",
        )
    if Path(entry_point).is_absolute() or ".." in Path(entry_point).parts:
        raise ArgumentError(
            "entry_point",
            f"{entry_point!r} must be a path inside source_dir",
            "Pass it relative to source_dir",
        )
    if not _is_file(directory / entry_point):
        raise ArgumentError(
            "entry_point",
            f"{entry_point!r} is not in source_dir {str(source_dir)!r}",
            "Pass the script's path relative to source_dir",
        )
    return entry_point, str(source_dir)


def _is_file(path: Path) -> bool:
    # A name too long for the file system, or with a NUL byte, names no file rather than failing.
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _uri(argument: str, value: str, *, cluster: bool) -> str:
    try:
        parsed = parse_uri(value)
    except InvalidURIError as err:
        raise ArgumentError(
            argument, str(err), "Use cos://<bucket-appid>/<prefix> (or file:///path in local mode)"
        ) from None
    if cluster and parsed.is_local:
        raise ArgumentError(
            argument,
            f"{value} is a path on this machine, which pods in the cluster cannot read",
            "Use a cos:// URI, or train on this machine with train_instance_type='local'",
        )
    return str(parsed) if not parsed.is_local else value


def location(argument: str, value: Any, *, local: bool, required: bool = True) -> str | None:
    """An object-store location: cos://, s3://, file://; in local mode a plain path means file://."""
    if value is None and not required:
        return None
    if not isinstance(value, str | Path) or not str(value):
        raise ArgumentError(
            argument,
            f"got {value!r}",
            "Pass a COS location, e.g. cos://my-bucket-1250000000/path"
            + (" (or a local directory in local mode)" if argument == "output_path" else ""),
        )
    text = str(value)
    if "://" not in text:
        if not local:
            raise ArgumentError(
                argument,
                f"{text!r} has no scheme",
                "Pass a cos://<bucket-appid>/<prefix> URI (local paths work only with "
                "train_instance_type='local')",
            )
        text = f"file://{Path(text).resolve()}"
    _uri(argument, text, cluster=not local)
    return text.rstrip("/") if text.rstrip("/") != "file:/" else text


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
        if not isinstance(key, str) or not _HYPERPARAMETER_NAME.match(key):
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
        if len(result[key]) > MAX_HYPERPARAMETER_VALUE:
            raise ArgumentError(
                "hyperparameters",
                f"the value of {key!r} is {len(result[key])} characters long, at most "
                f"{MAX_HYPERPARAMETER_VALUE} are allowed",
                "Pass large settings in a file in source_dir or in an input channel",
            )
    return result


def positive_int(argument: str, value: Any, limit: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ArgumentError(argument, f"got {value!r}, it must be a whole number from 1 to {limit}", example)
    return value


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
        if isinstance(ps_count, bool) or not isinstance(ps_count, int) or not 1 <= ps_count <= 100:
            raise ArgumentError(
                "distributions",
                f"parameter_server count {ps_count!r} must be a whole number from 1 to 100",
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


def inputs(value: Any, *, local: bool) -> dict[str, str]:
    """fit's inputs: a str is the channel `training`, a dict names channels, None means no data."""
    if value is None:
        return {}
    if isinstance(value, str | Path):
        value = {"training": str(value)}
    if not isinstance(value, Mapping):
        raise ArgumentError(
            "inputs",
            f"got {type(value).__name__}",
            "Pass a COS URI (one channel named 'training') or a dict of channel name to URI, e.g. "
            "{'train': 'cos://bucket-125000000/train', 'test': 'cos://bucket-125000000/test'}",
        )
    channels: dict[str, str] = {}
    for name, uri in value.items():
        if not isinstance(name, str) or not re.match(contract.CHANNEL_NAME_PATTERN, name):
            raise ArgumentError(
                "inputs",
                f"channel name {name!r} is not valid: it becomes the variable TM_CHANNEL_<NAME>",
                "Start channel names with a letter and use only letters, digits and '_', e.g. 'train'",
            )
        if name.upper() in {c.upper() for c in channels}:
            raise ArgumentError(
                "inputs", f"channel names {name!r} and another differ only in case", "Rename one of them"
            )
        channel = location(f"inputs[{name!r}]", uri, local=local)
        assert channel is not None
        channels[name] = channel
    return channels
