"""Checks of the Estimator's paths and URIs: the source directory and entry point, output and
checkpoint locations, and fit's input channels. Each raises `ArgumentError` naming the argument."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ti import contract
from ti._sdk.arguments import ArgumentError
from ti.storage.errors import InvalidURIError
from ti.storage.uri import parse_uri


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
