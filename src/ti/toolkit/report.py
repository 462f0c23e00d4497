"""Termination messages: what the kubelet (and local mode) reads when a toolkit step ends."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ti import contract


def clip(text: str, limit: int = contract.FAILURE_MESSAGE_LIMIT) -> str:
    """The last `limit` bytes of `text` (the end of a message says the most), on a UTF-8 boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    return data[-limit:].decode("utf-8", errors="ignore")


def termination_log(env: Mapping[str, str] | None = None) -> Path | None:
    """The termination-message file, when there is one to write: never create one in a host's /dev."""
    env = os.environ if env is None else env
    override = env.get(contract.TERMINATION_LOG_ENV)
    if override:
        return Path(override)
    path = Path(contract.TERMINATION_LOG)
    return path if path.is_file() and os.access(path, os.W_OK) else None


def write_message(text: str, beside: Path | None, env: Mapping[str, str] | None = None) -> None:
    """Write `text` (clipped) as the termination message and to `beside` (our own copy)."""
    text = clip(text)
    for path in (termination_log(env), beside):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"ti-toolkit: cannot write {path}: {error}", file=sys.stderr)


def read_message(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        return text or None
    return None
