"""Hypothesis-made TFTrainingJobs sent to the real API server, with the operator running.

Each spec draws every field from good values or, now and then, from a bad one of a known kind:
- `refused`: the API server must refuse it (schema, CEL or strict field validation), and its message
  must name a field the spec got wrong;
- `invalid`: the API server cannot tell (a regular expression that does not compile, channel names
  that differ only in case, an unknown instance type): the operator must fail the job at once with
  reason InvalidSpec, naming the field, and create no pod.
Every accepted job must reach a phase; a job that failed as InvalidSpec has no pod; the operator never
logs a traceback. The run is bounded (40 examples, no shrinking) and derandomized.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tests.support.controlplane import ControlPlane
from ti.api import TFTrainingJob
from ti.catalog import CatalogError, load_catalog
from ti.operator.render import render
from ti.operator.settings import OperatorConfig

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "training.ti.io", "v1alpha1", "tftrainingjobs"
LABEL_JOB = "training.ti.io/job-name"
URI = "cos://models-1250000000"
CATALOG = load_catalog()
CLUSTER_TYPES = sorted(k for k, t in CATALOG.instance_types.items() if not t.local and t.gpus <= 2)

MISSING = object()


@dataclass
class Case:
    """One generated job: its spec (MISSING fields left out) and what is wrong with it, by field."""

    name: str
    spec: dict[str, Any]
    refused: dict[str, str] = field(default_factory=dict)  # field path -> what is wrong
    invalid: dict[str, str] = field(default_factory=dict)
    metadata_extra: dict[str, Any] = field(default_factory=dict)
    expect: str | None = None  # the status.reason a handpicked case must end with

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TFTrainingJob",
            "metadata": {"name": self.name, **self.metadata_extra},
            "spec": {k: v for k, v in self.spec.items() if v is not MISSING},
        }


@dataclass(frozen=True)
class Choice:
    value: Any
    kind: str = "ok"  # ok | refused | invalid
    why: str = ""


def ok(value: Any) -> Choice:
    return Choice(value)


def refused(value: Any, why: str) -> Choice:
    return Choice(value, "refused", why)


def invalid(value: Any, why: str) -> Choice:
    return Choice(value, "invalid", why)


@dataclass(frozen=True)
class Field:
    """A field's good values and its bad ones."""

    good: st.SearchStrategy[Choice]
    bad: tuple[Choice, ...] = ()


def pick(good: st.SearchStrategy[Choice], *bad: Choice) -> Field:
    return Field(good, bad)


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
label = st.from_regex(r"\A[a-z][a-z0-9]{0,12}\Z")
uri = st.builds(lambda p: f"{URI}/{p}", st.from_regex(r"\A[a-z0-9/_-]{0,20}\Z"))

FIELDS: dict[str, Field] = {
    "instanceType": pick(
        st.sampled_from(CLUSTER_TYPES).map(ok),
        invalid("ML.NOPE.HUGE", "unknown instance type"),
        invalid("local", "a local-mode type in a cluster"),
        refused("", "empty"),
        refused("X" * 129, "longer than 128"),
    ),
    "instanceCount": pick(
        st.integers(1, 3).map(ok),
        refused(0, "below 1"),
        refused(1001, "above 1000"),
        refused("two", "not an integer"),
    ),
    "frameworkVersion": pick(
        st.sampled_from(["1.14.0", "2.0.0", "2.16", "2.0"]).map(ok),
        invalid("9.9", "no preset image"),
        refused("latest", "not a version"),
        refused("1.2.3.4", "not a version"),
    ),
    "image": pick(
        st.sampled_from([MISSING, MISSING, "registry.example.com/team/tf:2.4"]).map(ok),
        refused("", "empty"),
    ),
    "pyVersion": pick(st.just(ok("py3")), refused("py2", "only py3")),
    "entryPoint": pick(
        st.sampled_from(["train.py", "pkg/main.py", "run_1.py"]).map(ok),
        refused("../escape.py", "leaves sourceDir"),
        refused("-x.py", "pattern"),
        refused("", "empty"),
    ),
    "sourceDir": pick(
        st.one_of(st.just(MISSING), uri).map(ok),
        refused("file:///tmp/src.tar.gz", "file:// in a cluster"),
        refused("http://example.com/src.tar.gz", "not an object-store URI"),
    ),
    "outputPath": pick(uri.map(ok), refused(MISSING, "required"), refused("cos://UPPER/x", "pattern")),
    "hyperparameters": pick(
        st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,10}\Z"), text, max_size=4).map(ok),
        refused({"bad key": "1"}, "hyperparameter name"),
    ),
    "inputs": pick(
        st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"), uri, max_size=3).map(ok),
        invalid({"train": f"{URI}/a", "TRAIN": f"{URI}/b"}, "channel names differ only in case"),
        refused({"1st": f"{URI}/a"}, "channel name"),
        refused({"training": "file:///data"}, "file:// in a cluster"),
    ),
    "env": pick(
        st.lists(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,10}\Z"), max_size=3, unique=True)
        .filter(lambda names: not any(n.startswith("TM_") or n == "TF_CONFIG" for n in names))
        .flatmap(
            lambda names: st.tuples(*[text for _ in names]).map(
                lambda vals: list(zip(names, vals, strict=True))
            )
        )
        .map(lambda pairs: ok([{"name": n, "value": v} for n, v in pairs])),
        refused([{"name": "TM_HPS", "value": "{}"}], "reserved variable"),
        refused([{"name": "TF_CONFIG", "value": "{}"}], "reserved variable"),
        refused([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}], "duplicate name"),
        refused([{"name": "1A"}], "variable name"),
    ),
    "distribution": pick(
        st.sampled_from(
            [MISSING, {"type": "multiWorkerMirrored"}, {"type": "parameterServer", "parameterServerCount": 1}]
        ).map(ok),
        refused({"type": "ring"}, "unknown type"),
        refused({"type": "multiWorkerMirrored", "parameterServerCount": 2}, "ps count without ps"),
        refused({"type": "parameterServer", "parameterServerCount": 0}, "below 1"),
    ),
    "runPolicy": pick(
        st.fixed_dictionaries(
            {},
            optional={
                "backoffLimit": st.integers(0, 5),
                "cleanPodPolicy": st.sampled_from(["None", "Running", "All"]),
                "schedulingTimeoutSeconds": st.integers(60, 3600),
            },
        ).map(ok),
        refused({"backoffLimit": -1}, "below 0"),
        refused({"cleanPodPolicy": "Some"}, "unknown policy"),
        refused({"schedulingTimeoutSeconds": 0}, "below 1"),
        refused({"ttlSecondsAfterFinished": -5}, "below 0"),
    ),
    "metricDefinitions": pick(
        st.sampled_from([MISSING, [{"name": "loss", "regex": r"loss=([0-9.]+)"}]]).map(ok),
        invalid([{"name": "loss", "regex": "loss=("}], "regex does not compile"),
        invalid([{"name": "acc", "regex": "acc"}], "regex without a group"),
        refused([{"name": "9lives", "regex": "(x)"}], "metric name"),
    ),
    "maxRunSeconds": pick(st.just(ok(MISSING)), refused(0, "below 1"), refused(31 * 86400, "above 30 days")),
    "volumeSizeGB": pick(st.just(ok(MISSING)), refused(0, "below 1")),
    "unknownField": pick(st.just(ok(MISSING)), refused(1, "not in the schema")),
}
# Names of fields as the API server's messages spell them (a refused spec must name one of these).
PATHS = {k: f"spec.{k}" for k in FIELDS} | {"unknownField": "unknownField", "name": "metadata.name"}


NAME = pick(
    label.map(ok),
    refused("Upper", "not lower case"),
    refused("x" * 51, "longer than 50"),
    refused("dotted.name", "not a DNS label"),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Half the specs are good throughout; the others get one or two bad fields."""
    faults = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    spoiled = draw(
        st.lists(
            st.sampled_from([*sorted(k for k, f in FIELDS.items() if f.bad), "name"]),
            min_size=faults,
            max_size=faults,
            unique=True,
        )
    )

    def choose(key: str, f: Field) -> Choice:
        return draw(st.sampled_from(f.bad)) if key in spoiled else draw(f.good)

    chosen = {k: choose(k, f) for k, f in FIELDS.items()}
    name = choose("name", NAME)
    case = Case(name=name.value, spec={k: c.value for k, c in chosen.items()})
    for key, c in [*chosen.items(), ("name", name)]:
        if c.kind == "refused":
            case.refused[key] = c.why
        elif c.kind == "invalid":
            case.invalid[key] = c.why
    if case.spec.get("image", MISSING) is MISSING and case.spec.get("frameworkVersion", MISSING) is MISSING:
        case.refused["frameworkVersion"] = "neither frameworkVersion nor image"
    if case.spec.get("image", MISSING) is not MISSING:
        # An image of the user's own wins over frameworkVersion: a version with no preset is not used.
        case.invalid.pop("frameworkVersion", None)
    return case


def handpicked(name: str, **spec: Any) -> Case:
    base = {
        "instanceType": "TI.S.MEDIUM.POST",
        "frameworkVersion": "2.0.0",
        "entryPoint": "train.py",
        "outputPath": f"{URI}/out",
    }
    return Case(name=name, spec={**base, **spec})


# Holes the API server cannot close, always tried (besides whatever hypothesis draws).
KNOWN = [
    handpicked("hand-regex", metricDefinitions=[{"name": "l", "regex": "l=("}]),
    handpicked("hand-channels", inputs={"train": f"{URI}/a", "Train": f"{URI}/b"}),
    handpicked("hand-scheduler", runPolicy={"schedulerName": "Not_A_DNS_Name"}),
    handpicked("hand-image", image=" leading-space:1"),
    handpicked("hand-nosa", role="nobody-made-this-account"),
]
KNOWN[0].invalid["metricDefinitions"] = "regex does not compile"
KNOWN[1].invalid["inputs"] = "channel names differ only in case"
for known in KNOWN[3:]:  # the pods are refused; a scheduler name no scheduler serves is not
    known.expect = "FailedCreate"


def model_verdict(body: dict[str, Any]) -> str | None:
    """What the operator's own model says is wrong with a stored object, or None."""
    try:
        job = TFTrainingJob.from_body(body)
        render(job, CATALOG, OperatorConfig())
    except ValidationError as err:
        return str(err)
    except CatalogError as err:
        return err.message
    return None


def test_fuzzed_specs_are_refused_clearly_or_driven_to_a_valid_state(
    control_plane: ControlPlane, namespace: str, start_operator: Callable[..., Any]
) -> None:
    operator = start_operator()
    api = control_plane.api_client()
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    serial = itertools.count()
    accepted: list[tuple[Case, dict[str, Any]]] = []
    refusals: list[str] = []

    def send(case: Case) -> None:
        n = next(serial)
        if "name" not in case.refused:
            case.name = f"{case.name}-{n}"
        try:
            stored = custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, case.body(), field_validation="Strict"
            )
        except ApiException as err:
            message = json.loads(err.body or "{}").get("message", err.body)
            assert err.status in (400, 422), f"{case}: refused with {err.status}: {message}"
            bad = {**case.refused, **case.invalid}
            assert bad, f"a valid spec was refused: {case.body()}\n{message}"
            named = [k for k in bad if PATHS.get(k, k) in message or f".{k}" in message]
            assert named, f"the refusal names none of the wrong fields {bad}:\n{message}"
            refusals.append(message)
            return
        assert not case.refused, f"the API server accepted {case.refused}: {case.body()}"
        accepted.append((case, stored))

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(case=cases())
    def fuzz(case: Case) -> None:
        send(case)

    for known in KNOWN:
        send(known)
    fuzz()
    assert refusals and accepted, (len(refusals), len(accepted))
    print(f"\n[fuzz] {len(refusals)} refused, {len(accepted)} accepted")

    # Every accepted job reaches a phase.
    deadline = time.monotonic() + 90
    jobs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        jobs = {
            j["metadata"]["name"]: j
            for j in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        }
        if all((jobs[c.name].get("status") or {}).get("phase") for c, _ in accepted):
            break
        time.sleep(1)
    unset = [c.name for c, _ in accepted if not (jobs[c.name].get("status") or {}).get("phase")]
    assert not unset, f"jobs the operator never gave a phase: {unset}\n{operator.tail()}"

    time.sleep(2)  # pods the operator might wrongly create would show up by now
    for case, stored in accepted:
        status = jobs[case.name]["status"]
        pods = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB}={case.name}").items
        wrong = model_verdict(stored)
        if case.expect is not None:
            assert status.get("reason") == case.expect, (case.name, status)
        if wrong is not None or case.invalid:
            assert wrong is not None, f"the model took {case.invalid} for valid: {stored['spec']}"
            assert (status["phase"], status.get("reason")) == ("Failed", "InvalidSpec"), (case.name, status)
            assert (
                any(PATHS[k].split(".")[-1] in status["failureReason"] for k in case.invalid)
                or not case.invalid
            ), (
                case.invalid,
                status["failureReason"],
            )
        if status.get("reason") == "InvalidSpec":
            assert status["phase"] == "Failed" and status.get("failureReason"), status
            assert not pods, (
                f"{case.name} failed as InvalidSpec yet has pods {[p.metadata.name for p in pods]}"
            )
        elif status.get("reason") == "FailedCreate":
            # The API server refused the pods (an image name with spaces, a scheduler name that is not
            # a DNS name, a ServiceAccount that does not exist): the job waits, saying why.
            assert status["phase"] == "Pending", status
            created = next(c for c in status["conditions"] if c["type"] == "Created")
            assert created["status"] == "False" and created["message"], created
            assert not pods, (case.name, [p.metadata.name for p in pods])
        elif status["phase"] != "Failed":
            assert status["phase"] in ("Pending", "Starting", "Downloading", "Training"), status
            assert len(pods) == stored["spec"]["instanceCount"] + (
                (stored["spec"].get("distribution") or {}).get("parameterServerCount", 0)
                or (1 if (stored["spec"].get("distribution") or {}).get("type") == "parameterServer" else 0)
            ), (case.name, [p.metadata.name for p in pods])

    outcomes = sorted(f"{j['status']['phase']}/{j['status'].get('reason')}" for j in jobs.values())
    print("[fuzz] accepted jobs ended:", {o: outcomes.count(o) for o in outcomes})
    print("[fuzz] refusals, e.g.:", *refusals[:: max(1, len(refusals) // 6)], sep="\n  ")
    assert operator.alive(), operator.tail()
    log = Path(operator.log).read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
