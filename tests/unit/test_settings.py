"""The operator's one settings reader: defaults, every variable, and a clear refusal of a wrong value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ti.operator.settings import SETTINGS, OperatorConfig, Settings, SettingsError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# A value for each variable, other than its default, and where it lands.
GOOD = {
    "TI_OPERATOR_WORKERS": ("3", "workers", 3),
    "TI_OPERATOR_METRICS_PORT": ("0", "metrics_port", 0),
    "TI_OPERATOR_QPS": ("2.5", "qps", 2.5),
    "TI_OPERATOR_BURST": ("7", "burst", 7),
    "TI_CATALOG_FILE": ("/etc/ti-operator/catalog.yaml", "catalog_file", "/etc/ti-operator/catalog.yaml"),
    "TI_TOOLKIT_IMAGE": ("me/toolkit:1", "config.toolkit_image", "me/toolkit:1"),
    "TI_IMAGE_PULL_POLICY": ("Never", "config.image_pull_policy", "Never"),
    "TI_STORAGE_SECRET": ("cos", "config.storage_secret", "cos"),
    "TI_COS_REGION": ("ap-shanghai", "config.cos_region", "ap-shanghai"),
    "TI_COS_ENDPOINT": ("http://10.0.0.1:9000", "config.cos_endpoint", "http://10.0.0.1:9000"),
    "TI_CHECKPOINT_SYNC_SECONDS": ("5", "config.checkpoint_sync_seconds", 5),
    "TI_STOP_GRACE_SECONDS": ("0", "config.stop_grace_seconds", 0),
    "TI_TOOLKIT_CPU": ("1.5", "config.toolkit_cpu", "1.5"),
    "TI_TOOLKIT_MEMORY": ("512Mi", "config.toolkit_memory", "512Mi"),
    "TI_TOOLKIT_MEMORY_LIMIT": ("2Gi", "config.toolkit_memory_limit", "2Gi"),
    "TI_RESYNC_SECONDS": ("2", "config.resync_seconds", 2),
}

BAD = [
    ("TI_OPERATOR_WORKERS", "eight", "valid integer"),
    ("TI_OPERATOR_WORKERS", "0", "greater than or equal to 1"),
    ("TI_OPERATOR_METRICS_PORT", "70000", "less than or equal to 65535"),
    ("TI_OPERATOR_QPS", "-1", "greater than or equal to 0"),
    ("TI_OPERATOR_QPS", "inf", "finite number"),
    ("TI_OPERATOR_BURST", "1.5", "valid integer"),
    ("TI_IMAGE_PULL_POLICY", "Sometimes", "'Always', 'IfNotPresent' or 'Never'"),
    ("TI_COS_ENDPOINT", "ftp://cos", "not of the allowed form"),
    ("TI_CHECKPOINT_SYNC_SECONDS", "0", "greater than or equal to 1"),
    ("TI_STOP_GRACE_SECONDS", "-5", "greater than or equal to 0"),
    ("TI_TOOLKIT_CPU", "lots", "not of the allowed form"),
    ("TI_TOOLKIT_MEMORY", "1 GB", "not of the allowed form"),
    ("TI_TOOLKIT_MEMORY_LIMIT", "-1Gi", "not of the allowed form"),
    ("TI_RESYNC_SECONDS", "1m", "valid integer"),
]


def get(settings: Settings, dotted: str) -> object:
    value: object = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert (settings.workers, settings.metrics_port, settings.qps, settings.client_burst) == (8, 9090, 0, 1)
    assert settings.catalog_file is None
    assert settings.config == OperatorConfig()
    # The chart renders optional settings as "": empty means unset, never an error.
    assert Settings.from_env({s.variable: "" for s in SETTINGS}) == settings


def test_every_variable_is_read_into_its_field() -> None:
    assert sorted(GOOD) == sorted(s.variable for s in SETTINGS), "GOOD covers every setting"
    settings = Settings.from_env({var: raw for var, (raw, _, _) in GOOD.items()})
    for var, (_, field, value) in GOOD.items():
        assert get(settings, field) == value, var
    assert {s.variable: s.field for s in SETTINGS} == {var: field for var, (_, field, _) in GOOD.items()}


def test_burst_defaults_to_qps_rounded_up() -> None:
    assert Settings.from_env({"TI_OPERATOR_QPS": "2.5"}).client_burst == 3
    assert Settings.from_env({"TI_OPERATOR_QPS": "20", "TI_OPERATOR_BURST": "30"}).client_burst == 30


def test_operator_config_from_env_is_the_pod_shaping_part() -> None:
    env = {var: raw for var, (raw, _, _) in GOOD.items()}
    assert OperatorConfig.from_env(env) == Settings.from_env(env).config


@pytest.mark.parametrize(("variable", "value", "why"), BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_a_wrong_value_names_the_variable_what_was_wrong_and_what_is_allowed(
    variable: str, value: str, why: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    (problem,) = caught.value.problems
    allowed = next(s.allowed for s in SETTINGS if s.variable == variable)
    assert problem.startswith(f"{variable}={value!r}: ")
    assert why in problem
    assert problem.endswith(f"; allowed: {allowed}")


def test_every_wrong_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TI_OPERATOR_WORKERS": "x", "TI_RESYNC_SECONDS": "0", "TI_COS_REGION": "ok"})
    assert [p.split("=")[0] for p in caught.value.problems] == ["TI_OPERATOR_WORKERS", "TI_RESYNC_SECONDS"]
    assert str(caught.value).startswith("invalid operator settings:\n  TI_OPERATOR_WORKERS=")


def run_operator(**settings: str) -> subprocess.CompletedProcess[str]:
    """`kopf run operator/handlers.py` as the chart runs it, with `settings` and no cluster to reach."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TI_")},
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "KUBECONFIG": "/nonexistent",
        **settings,
    }
    kopf = Path(sys.executable).parent / "kopf"
    return subprocess.run(
        [str(kopf), "run", str(REPO / "operator" / "handlers.py"), "--standalone", "--all-namespaces"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_operator_exits_at_startup_on_a_wrong_value() -> None:
    # Settings are read before kopf logs in, so no API server is needed to see the refusal.
    proc = run_operator(TI_OPERATOR_WORKERS="eight")
    assert proc.returncode != 0
    assert "failed permanently: invalid operator settings:" in proc.stderr, proc.stderr[-2000:]
    assert "TI_OPERATOR_WORKERS='eight': Input should be a valid integer" in proc.stderr


def test_the_operator_exits_at_startup_on_a_broken_catalog_file(tmp_path: Path) -> None:
    broken = tmp_path / "catalog.yaml"
    broken.write_text("instanceTypes:\n  X:\n    cpu: -1\n    memory: 1Gi\n")
    proc = run_operator(TI_CATALOG_FILE=str(broken))
    assert proc.returncode != 0
    assert f"failed permanently: invalid catalog in {broken}" in proc.stderr, proc.stderr[-2000:]
