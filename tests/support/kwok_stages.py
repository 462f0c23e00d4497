"""kwok Stage configurations (`kwok --config`) for planes whose pods must end by themselves.

kwok's default pod stages make every pod Running and complete only pods owned by a batch Job. The
fault tests and the benchmarks need pods of any controller to run for a set time and then end, with
exit code 0 or with a platform fault. A config that holds any pod Stage replaces kwok's defaults, so
`pod_stages()` always includes the default `pod-ready` and `pod-delete` stages, then the given ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# kwok v0.7.0 kustomize/stage/pod/fast/pod-ready.yaml: scheduled pods become Running at once.
_POD_READY_TEMPLATE = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""

# Every container ends; `main` (the training container, or every container when empty) with the exit
# code given, the others with 0. Phase Succeeded when the code is 0, else Failed.
_END_TEMPLATE = """\
{{{{ $now := Now }}}}
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      {{{{ if or ( eq "{main}" "" ) ( eq .name "{main}" ) }}}}
      exitCode: {code}
      reason: {reason}
      {{{{ else }}}}
      exitCode: 0
      reason: Completed
      {{{{ end }}}}
      finishedAt: {{{{ $now | Quote }}}}
      startedAt: {{{{ $now | Quote }}}}
{{{{ end }}}}
phase: {phase}
"""


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    """One selector term: a jq expression on the pod, an operator (In, NotIn, Exists, DoesNotExist)."""
    term: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        term["values"] = list(values)
    return term


def label(name: str) -> str:
    return f'.metadata.labels["{name}"]'


def stage(
    name: str, selector: Sequence[dict[str, Any]], next_: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": list(selector)},
            "next": next_,
            **spec,
        },
    }


def end_stage(
    name: str,
    selector: Sequence[dict[str, Any]],
    after_ms: int,
    jitter_ms: int = 0,
    exit_code: int = 0,
    main: str = "",
) -> dict[str, Any]:
    """Running pods matching `selector` end `after_ms` (+ up to `jitter_ms`) after they started running."""
    running = [
        expr(".metadata.deletionTimestamp", "DoesNotExist"),
        expr(".status.phase", "In", "Running"),
        *selector,
    ]
    template = _END_TEMPLATE.format(
        main=main,
        code=exit_code,
        reason="Completed" if exit_code == 0 else ("OOMKilled" if exit_code == 137 else "Error"),
        phase="Succeeded" if exit_code == 0 else "Failed",
    )
    delay: dict[str, Any] = {"durationMilliseconds": after_ms}
    if jitter_ms:
        delay["jitterDurationMilliseconds"] = jitter_ms
    return stage(name, running, {"statusTemplate": template}, delay=delay)


def pod_stages(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """kwok's default pod-ready and pod-delete stages, then `extra` (whose selectors must not overlap)."""
    ready = stage(
        "pod-ready",
        [expr(".metadata.deletionTimestamp", "DoesNotExist"), expr(".status.podIP", "DoesNotExist")],
        {"statusTemplate": _POD_READY_TEMPLATE},
    )
    delete = stage(
        "pod-delete",
        [expr(".metadata.deletionTimestamp", "Exists")],
        {"finalizers": {"empty": True}, "delete": True},
    )
    return [ready, delete, *extra]


def write_config(path: Path, stages: Sequence[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(stages, sort_keys=False))
    return path
