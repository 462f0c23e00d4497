"""The kubernetes client's CoreV1Api, with the writes the operator makes by the hundred sent as the
JSON they are: pod creates and deletes, Services and Events.

The generated client validates a dict body into its pydantic model before it serializes it again,
and turns the answer into another model: about 2 ms of CPU for a pod on a 2-CPU machine, which is
more than the rest of the reconcile that decided to create it. These methods send the dict and hand
back the answer as a dict. They keep the client's names and arguments (so `tests/support/rbac_calls`
sees what the operator calls), its rate limit (`ti.operator.ratelimit` wraps the REST client they
use), and its errors: an `ApiException` with the server's status and body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def send(api: client.ApiClient, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """One request with a JSON body; the answer decoded, or the ApiException the client raises."""
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    request = api.param_serialize(
        method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request)
    response.read()
    text = (response.data or b"").decode("utf-8")
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return json.loads(text) if text else None


class CoreV1Api(client.CoreV1Api):
    """CoreV1Api whose pod, Service and Event writes take and return plain dicts."""

    def create_namespaced_pod(self, namespace: str, body: Mapping[str, Any]) -> Any:  # type: ignore[override]
        return send(self.api_client, "POST", f"/api/v1/namespaces/{namespace}/pods", body)

    def delete_namespaced_pod(  # type: ignore[override]
        self, name: str, namespace: str, body: Mapping[str, Any] | None = None
    ) -> Any:
        return send(self.api_client, "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    def create_namespaced_service(self, namespace: str, body: Mapping[str, Any]) -> Any:  # type: ignore[override]
        return send(self.api_client, "POST", f"/api/v1/namespaces/{namespace}/services", body)

    def create_namespaced_event(self, namespace: str, body: Mapping[str, Any]) -> Any:  # type: ignore[override]
        return send(self.api_client, "POST", f"/api/v1/namespaces/{namespace}/events", body)
