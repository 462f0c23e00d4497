"""Job names: `<image name>-<yyyy-mm-dd-hh-mm-ss-mmm>` by default (the TI SDK's rule), DNS-1123 safe.

A job name becomes the TFTrainingJob's `metadata.name`, the headless Service's name and the prefix of
every pod's host name, so it must be a DNS label of at most `JOB_NAME_MAX_LENGTH` characters.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

from ti.api.models import JOB_NAME_MAX_LENGTH, JOB_NAME_PATTERN

TIMESTAMP_FORMAT = "%Y-%m-%d-%H-%M-%S"
# "-2024-01-31-12-00-00-000": the separator, 19 characters of date and time, "-" and milliseconds.
_SUFFIX_LENGTH = 1 + 19 + 4
MAX_BASE_LENGTH = JOB_NAME_MAX_LENGTH - _SUFFIX_LENGTH

_lock = threading.Lock()
_last: datetime | None = None


def base_name_from_image(image: str) -> str:
    """The repository's last path component without tag or digest: `ccr.ccs.tencentyun.com/ti/tf:1.14`
    → `tf`; made DNS-safe and short enough to leave room for the timestamp."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    last = last.split(":", 1)[0]
    return sanitize(last) or "job"


def sanitize(text: str, max_length: int = MAX_BASE_LENGTH) -> str:
    """Lower case, letters/digits/hyphens only, starting with a letter, at most `max_length`."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    cleaned = cleaned.lstrip("-0123456789")
    return cleaned[:max_length].rstrip("-")


def timestamp(now: datetime) -> str:
    """`yyyy-mm-dd-hh-mm-ss-mmm` in UTC."""
    now = now.astimezone(timezone.utc)
    return f"{now.strftime(TIMESTAMP_FORMAT)}-{now.microsecond // 1000:03d}"


def _unique_now(now: datetime | None) -> datetime:
    # Two names asked for in the same millisecond by one process still differ.
    global _last
    with _lock:
        current = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        current = current.replace(microsecond=current.microsecond // 1000 * 1000)
        if _last is not None and current <= _last:
            current = _last + timedelta(milliseconds=1)
        _last = current
        return current


def default_job_name(base: str, now: datetime | None = None) -> str:
    """`<base>-<timestamp>`: `base` is sanitized and shortened so that the name is a valid job name."""
    prefix = sanitize(base) or "job"
    return f"{prefix}-{timestamp(_unique_now(now))}"


def invalid_job_name(name: str) -> str | None:
    """Why `name` cannot name a job, or None when it can."""
    if not name:
        return "it is empty"
    if len(name) > JOB_NAME_MAX_LENGTH:
        return f"it is {len(name)} characters long, the limit is {JOB_NAME_MAX_LENGTH}"
    if not re.match(JOB_NAME_PATTERN, name):
        return (
            "it must hold only lower case letters, digits and '-', start with a letter and end with a "
            "letter or digit"
        )
    return None
