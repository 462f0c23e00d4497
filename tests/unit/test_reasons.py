"""One source for every reason: ti/reasons.py. Nothing else in the package writes one as a bare string.

The scan reads the package's syntax trees. A reason is "bare" when a string literal that looks like
one (CamelCase, or an f-string starting so) stands where a reason goes: a `reason=` argument, a
"reason" key, an assignment to a `reason`, a comparison with `.reason`, an Event's reason, or what a
function named for a reason returns; or when one of our own reasons' words appears as a literal
anywhere. Kubernetes' own words (pod phases, the kubelet's reasons we read) are not ours and pass.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ti.api import ConditionStatus, ConditionType, InstancePhase, Phase
from ti.reasons import Deletion, EventReason, Reason

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONSTANTS = ROOT / "src" / "ti" / "reasons.py"
SCANNED = [*sorted((ROOT / "src").rglob("*.py")), ROOT / "operator" / "handlers.py"]

_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
# Words of ours that Kubernetes also uses (phases, condition types, what the kubelet says of a pod the
# operator reads): as literals they are Kubernetes' words, so only reason positions count for them.
_KUBERNETES = {
    *(v.value for e in (Phase, InstancePhase, ConditionType, ConditionStatus) for v in e),
    "Evicted",
    "OOMKilled",
    "Unschedulable",
    "NodeLost",
    "DeadlineExceeded",
}
OURS = {r.value for r in (*Reason, *EventReason)} - _KUBERNETES


def _looks_like_reason(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(_CAMEL.match(node.value))
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        return isinstance(head, ast.Constant) and bool(re.match(r"^[A-Z][A-Za-z0-9]*[a-z]", str(head.value)))
    return False


def _bare_in(expr: ast.AST | None) -> list[ast.AST]:
    if expr is None:
        return []
    return [n for n in ast.walk(expr) if _looks_like_reason(n)]


def _is_reason_target(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "reason") or (
        isinstance(node, ast.Attribute) and node.attr == "reason"
    )


def _reason_positions(tree: ast.AST) -> list[ast.AST]:
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            found += _bare_in(node.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "reason":
                    found += _bare_in(value)
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if called in ("Event", "event") and len(node.args) > 1:
                found += _bare_in(node.args[1])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_reason_target(t) for t in targets):
                found += _bare_in(node.value)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_reason_target(s) for s in sides):
                found += [n for s in sides for n in _bare_in(s)]
        elif isinstance(node, ast.FunctionDef) and "reason" in node.name:
            found += [n for r in ast.walk(node) if isinstance(r, ast.Return) for n in _bare_in(r.value)]
    return found


def _our_words(tree: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in OURS]


def bare_reasons(source: str, where: str = "<source>") -> list[str]:
    """Every bare reason in `source`, as 'file:line: literal'."""
    tree = ast.parse(source)
    nodes = {id(n): n for n in [*_reason_positions(tree), *_our_words(tree)]}
    return sorted(
        f"{where}:{getattr(n, 'lineno', 0)}: {ast.unparse(n)}"
        for n in nodes.values()  # type: ignore[arg-type]
    )


def test_no_reason_is_a_bare_string_outside_ti_reasons() -> None:
    found = [
        hit
        for path in SCANNED
        if path != CONSTANTS
        for hit in bare_reasons(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not found, (
        f"{len(found)} bare reason strings (use ti.reasons.Reason / EventReason / Deletion):\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize(
    "snippet",
    [
        'report(phase, reason="NodeLost")',
        'report(phase, reason=old.reason or "WaitingForPods")',
        'x = {"reason": "OOMKilled", "message": m}',
        'self.event("Warning", "Restarting", "restarting")',
        'Event("Normal", "Created", "created")',
        'status.reason = "Stopped"',
        'if e.reason == "Failed":\n    pass',
        'def _reason(r):\n    return "TrainingFailed"',
        'reason = f"ExitCode{code}"',
        'STUCK = {"ErrImagePull": "ImagePullFailed"}',
        'status.update(phase=p, reason="LocalModeError")',
    ],
)
def test_the_scan_finds_each_kind_of_bare_reason(snippet: str) -> None:
    assert bare_reasons(snippet), f"not caught: {snippet}"


@pytest.mark.parametrize(
    "snippet",
    [
        'if pod.phase != "Failed":\n    pass',  # a pod phase: Kubernetes' word
        'if waiting.get("reason") == "InvalidImageName":\n    pass',  # the kubelet's word, read
        "report(phase, reason=Reason.NODE_LOST)",
        "reason = exit_code(code) if code >= 0 else Reason.CONTAINER_FAILED",
        'log.warning("could not record event %s", e.reason)',
    ],
)
def test_the_scan_leaves_constants_and_kubernetes_words_alone(snippet: str) -> None:
    assert not bare_reasons(snippet)


def test_every_reason_says_when_it_is_set_and_names_are_unique() -> None:
    for family in (Reason, EventReason):
        values = [m.value for m in family]
        assert len(values) == len(set(values))
        for member in family:
            assert _CAMEL.match(member.value), f"{member!r} is not CamelCase"
            assert member.doc and member.doc.endswith("."), f"{member!r} needs its one line of when"
    assert all(d.value == d.value.lower() for d in Deletion)
