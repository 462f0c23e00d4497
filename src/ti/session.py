"""Session: where the SDK talks to, and the only place it does.

Every call to the cluster (TFTrainingJob objects, pods, pod logs) and to object storage goes through a
`Session`, so tests and users can inject their own. The cluster is reached lazily: building a Session,
or running in local mode, needs no kubeconfig at all.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ti import contract
from ti.api import API_VERSION, KIND, PLURAL

GROUP, VERSION = API_VERSION.split("/")
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class SessionError(RuntimeError):
    """The cluster or the object store refused or could not be reached; the message says what to do."""


class JobNotFoundError(SessionError):
    """No TFTrainingJob of that name in the session's namespace."""

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(
            f"training job {name!r} not found in namespace {namespace!r}; "
            "`ti list` shows the jobs there (or pass another namespace: Session(namespace=...), ti -n NS)"
        )
        self.name = name
        self.namespace = namespace


class JobExistsError(SessionError):
    """A TFTrainingJob of that name already exists."""


class LogStream:
    """A pod log being read: iterate `chunks()`, or `close()` from any thread to end the read."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = threading.Event()

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._response.stream(64 * 1024, decode_content=True)
        except Exception as err:
            if not self._closed.is_set():
                raise SessionError(f"reading a pod log was cut off: {err}") from None
        finally:
            self._response.release_conn()

    def close(self) -> None:
        self._closed.set()
        shutdown = getattr(self._response, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self._response.close()


class Session:
    """Cluster and object-store settings of the SDK.

    namespace: where jobs live; default: the kubeconfig context's namespace, else `default`.
    kubeconfig, context: which cluster; default: $KUBECONFIG or ~/.kube/config and its current
        context, or the in-cluster service account when running in a pod.
    cos_endpoint, cos_region, secret_id, secret_key, session_token: the object store; default: the
        TI_COS_ENDPOINT / TENCENTCLOUD_* environment variables.
    api_client: a ready `kubernetes.client.ApiClient`, instead of kubeconfig and context.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        api_client: Any = None,
        cos_endpoint: str | None = None,
        cos_region: str | None = None,
        secret_id: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        self._namespace = namespace
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        self.context = context
        self._api_client = api_client
        self._lock = threading.Lock()
        env = os.environ
        self.cos_endpoint = cos_endpoint or env.get(contract.COS_ENDPOINT) or None
        self.cos_region = cos_region or env.get(contract.TENCENTCLOUD_REGION) or None
        self._secret_id = secret_id or env.get(contract.TENCENTCLOUD_SECRETID) or None
        self._secret_key = secret_key or env.get(contract.TENCENTCLOUD_SECRETKEY) or None
        self._session_token = session_token or env.get(contract.TENCENTCLOUD_SESSIONTOKEN) or None

    def __repr__(self) -> str:
        return f"Session(namespace={self._namespace!r}, kubeconfig={self.kubeconfig!r})"

    # ---- cluster connection -------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self._default_namespace()
        return self._namespace

    def _default_namespace(self) -> str:
        from kubernetes import config

        try:
            contexts, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
        except Exception:
            contexts, active = [], None
        chosen = (
            next((c for c in contexts if c.get("name") == self.context), None) if self.context else active
        )
        namespace = ((chosen or {}).get("context") or {}).get("namespace")
        if namespace:
            return str(namespace)
        if not contexts and Path(_NAMESPACE_FILE).is_file():
            return Path(_NAMESPACE_FILE).read_text().strip() or "default"
        return "default"

    @property
    def api_client(self) -> Any:
        with self._lock:
            if self._api_client is None:
                self._api_client = self._connect()
            return self._api_client

    def _connect(self) -> Any:
        from kubernetes import client, config

        explicit = self.kubeconfig or os.environ.get("KUBECONFIG")
        default_file = Path.home() / ".kube" / "config"
        if explicit or default_file.exists() or self.context:
            try:
                return config.new_client_from_config(
                    config_file=self.kubeconfig, context=self.context, persist_config=False
                )
            except config.ConfigException as err:
                raise SessionError(
                    f"cannot load the kubeconfig ({self.kubeconfig or explicit or default_file}): {err}; "
                    "pass Session(kubeconfig=..., context=...) or set KUBECONFIG"
                ) from None
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except config.ConfigException:
            raise SessionError(
                "no cluster configured: no kubeconfig (KUBECONFIG, ~/.kube/config) and not running in a "
                "pod. Point KUBECONFIG at your cluster, or train on this machine with "
                "train_instance_type='local'"
            ) from None

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def _call(self, what: str, fn: Callable[[], Any], *, name: str | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as err:
            if err.status == 404 and name is not None:
                raise JobNotFoundError(name, self.namespace) from None
            raise SessionError(f"{what} failed: {_api_message(err)}") from None
        except (HTTPError, OSError) as err:
            host = getattr(self.api_client.configuration, "host", "?")
            raise SessionError(
                f"{what} failed: cannot reach the cluster at {host} ({err}); check KUBECONFIG and the network"
            ) from None

    # ---- TFTrainingJob objects ----------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a TFTrainingJob; raises JobExistsError if the name is taken."""
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            return dict(
                self._custom().create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            )
        except ApiException as err:
            if err.status == 409:
                raise JobExistsError(
                    f"a training job named {name!r} already exists in namespace {self.namespace!r}; "
                    "choose another job_name, or attach to it: TensorFlow.attach(training_job_name=...)"
                ) from None
            if err.status == 422:
                raise SessionError(
                    f"the cluster refused training job {name!r}: {_api_message(err)}"
                ) from None
            if err.status == 404:
                raise SessionError(
                    f"the cluster does not know {KIND} ({GROUP}/{VERSION}): install ti-operator "
                    "(helm install ti-operator charts/ti-operator, or kubectl apply -f crds/)"
                ) from None
            raise SessionError(f"creating training job {name!r} failed: {_api_message(err)}") from None

    def get_job(self, name: str) -> dict[str, Any]:
        return dict(
            self._call(
                f"reading training job {name!r}",
                lambda: self._custom().get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name
                ),
                name=name,
            )
        )

    def list_jobs(self) -> list[dict[str, Any]]:
        found = self._call(
            "listing training jobs",
            lambda: self._custom().list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL),
        )
        return [dict(item) for item in found.get("items", [])]

    def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self._call(
                f"updating training job {name!r}",
                lambda: self._custom().patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, patch
                ),
                name=name,
            )
        )

    def delete_job(self, name: str) -> None:
        self._call(
            f"deleting training job {name!r}",
            lambda: self._custom().delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            ),
            name=name,
        )

    def watch_job(
        self, name: str, resource_version: str | None = None, timeout_seconds: int = 60
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events (ADDED, MODIFIED, DELETED, ERROR) of one job, from `resource_version` on, for at most
        `timeout_seconds`; the caller watches again from the last version it saw."""
        from kubernetes import watch

        w = watch.Watch()
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        stream = w.stream(
            self._custom().list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, **kwargs
        )
        yield from self._events(stream, w, f"watching training job {name!r}")

    # ---- pods -------------------------------------------------------------------------------------------

    def list_pods(self, job_name: str) -> tuple[list[dict[str, Any]], str]:
        """The job's pods (as API JSON) and the list's resourceVersion, to watch from."""
        response = self._call(
            f"listing the pods of {job_name!r}",
            lambda: self._core().list_namespaced_pod(
                self.namespace, label_selector=f"{contract.LABEL_JOB}={job_name}", _preload_content=False
            ),
        )
        data = json.loads(response.data)
        return list(data.get("items", [])), str(data.get("metadata", {}).get("resourceVersion", ""))

    def watch_pods(
        self, job_name: str, resource_version: str | None = None, timeout_seconds: int = 10
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events of the job's pods as API JSON; ends after `timeout_seconds`."""
        from kubernetes import watch

        w = watch.Watch()
        kwargs: dict[str, Any] = {
            "label_selector": f"{contract.LABEL_JOB}={job_name}",
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        stream = w.stream(self._core().list_namespaced_pod, self.namespace, **kwargs)
        yield from self._events(stream, w, f"watching the pods of {job_name!r}")

    def _events(self, stream: Iterator[Any], w: Any, what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            for event in stream:
                raw = event.get("raw_object")
                if not isinstance(raw, dict):
                    raw = event["object"] if isinstance(event["object"], dict) else {}
                yield str(event["type"]), raw
        except ApiException as err:
            if err.status == 410:
                yield "ERROR", {"code": 410, "message": "resource version too old"}
                return
            raise SessionError(f"{what} failed: {_api_message(err)}") from None
        except (HTTPError, OSError) as err:
            raise SessionError(f"{what} failed: {err}") from None
        finally:
            w.stop()

    def pod_log(
        self,
        pod: str,
        container: str = contract.MAIN_CONTAINER,
        *,
        follow: bool = False,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> LogStream:
        """Open one container's log through the pods/log endpoint; `close()` the stream to stop."""
        kwargs: dict[str, Any] = {"container": container, "follow": follow, "previous": previous}
        # A following read that stays silent this long is reconnected (skipping what was printed).
        kwargs["_request_timeout"] = (15, 300 if follow else 60)
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        response = self._call(
            f"reading the log of pod {pod!r}",
            lambda: self._core().read_namespaced_pod_log(
                pod, self.namespace, _preload_content=False, **kwargs
            ),
        )
        return LogStream(response)

    # ---- object storage ---------------------------------------------------------------------------

    def storage_env(self) -> dict[str, str]:
        """The object-store settings as the environment the toolkit reads (for local mode's processes)."""
        values = {
            contract.COS_ENDPOINT: self.cos_endpoint,
            contract.TENCENTCLOUD_REGION: self.cos_region,
            contract.TENCENTCLOUD_SECRETID: self._secret_id,
            contract.TENCENTCLOUD_SECRETKEY: self._secret_key,
            contract.TENCENTCLOUD_SESSIONTOKEN: self._session_token,
        }
        return {k: v for k, v in values.items() if v}

    def store(self, uri: str) -> Any:
        """The object store that holds `uri` (file://, cos://, s3://), with this session's settings."""
        from ti import storage

        return storage.store_for(uri, environ={**os.environ, **self.storage_env()})

    def upload_file(self, path: Path, uri: str, progress: Callable[[Any], None] | None = None) -> None:
        self.store(uri).upload_file(path, uri, progress=progress)

    def download_prefix(self, uri: str, dest: Path) -> list[Any]:
        return list(self.store(uri).download_prefix(uri, dest))

    def exists(self, uri: str) -> bool:
        return self.store(uri).stat(uri) is not None


def _api_message(err: Any) -> str:
    try:
        body = json.loads(err.body)
        return str(body.get("message") or err.reason)
    except (TypeError, ValueError):
        return f"{err.status} {err.reason}"
