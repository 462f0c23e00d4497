"""What the operator tells a job's owner: Kubernetes Events on the job, and the words of an error.

An error's words never hold a request, a header or a response body (str(ApiException) has them all):
only its class and, for the API server's refusals, the status, reason and the server's own message.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.exceptions import ApiException

from ti.api import API_VERSION, KIND
from ti.operator.plans import Event

# The API server keeps at most this much of an Event's message; an error's words are cut to it too.
MESSAGE_LIMIT = 1024


def _server_message(err: ApiException) -> str | None:
    # The `message` of the Status object in a refusal's body; None when the body has none.
    try:
        said = json.loads(err.body or "")["message"]
    except (TypeError, ValueError, KeyError):
        return None
    return str(said)


def api_message(err: ApiException) -> str:
    """The API server's own message in a refusal, or its status and reason."""
    said = _server_message(err)
    return said if said is not None else f"{err.status} {err.reason}"


def error_message(err: BaseException) -> str:
    """What a user may read of a reconcile's error: its class and, for the API server's refusals, the
    status, reason and the server's own message. Never str(ApiException): that holds the response's
    headers and body."""
    kind = type(err).__name__
    if isinstance(err, ApiException):
        said = f"{kind}: {err.status} {err.reason}"
        server = _server_message(err)
        text = f"{said}: {server}" if server else said
    else:
        text = f"{kind}: {err}" if str(err) else kind
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def event_object(
    namespace: str, name: str, uid: str | None, version: str | None, e: Event, now: datetime
) -> dict[str, Any]:
    """The core/v1 Event that records `e` on the job `namespace/name` (uid and resourceVersion as seen),
    as the JSON the API server takes."""
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "namespace": namespace}
    involved.update({k: v for k, v in (("uid", uid), ("resourceVersion", version)) if v})
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": involved,
        "reason": str(e.reason),
        "message": e.message[:MESSAGE_LIMIT],
        "type": e.type,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": "ti-operator"},
        "reportingComponent": "ti-operator",
        "reportingInstance": "ti-operator",
    }


class EventSink(threading.Thread):
    """Events sent by a thread of their own, as client-go's event broadcaster does: a reconcile under a
    client rate limit never waits for an Event's token (they go last), and its job is free for its
    next reconcile. An Event that cannot be sent is logged and dropped."""

    def __init__(self, send: Callable[[str, Any], None]) -> None:
        super().__init__(name="ti-events", daemon=True)
        self._send = send
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()

    def put(self, namespace: str, event: Any) -> None:
        self._queue.put((namespace, event))

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._send(*item)
            except Exception as err:  # an event lost is not worth a dead sender
                logging.getLogger("ti.operator.events").warning(
                    "could not record an event: %s", error_message(err)
                )
