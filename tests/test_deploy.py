"""The deploy/ folder: configuration files load and name existing jobs and assets, the
cluster code location validates, and `dagster definitions validate` passes.

dagster-k8s and dagster-celery are not project dependencies: the parts that need them are
skipped when they are not importable (they were run here with both on PYTHONPATH).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, Definitions, validate_run_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
EMBEDDING_ASSETS = {
    "cxr_embedding_cache",
    "note_embedding_cache",
    "cxr_embeddings",
    "note_embeddings",
}

has_k8s = importlib.util.find_spec("dagster_k8s") is not None
has_celery = importlib.util.find_spec("dagster_celery") is not None


def _yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _deploy_module():
    spec = importlib.util.spec_from_file_location(
        "moe_deploy_definitions", DEPLOY / "definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_defs() -> Definitions:
    from pipelines.definitions import defs

    return defs


@pytest.fixture(scope="module")
def deploy_module():
    return _deploy_module()


def _asset_names(defs: Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), MOE_DATA_DIR=str(tmp_path / "data"))
    env.pop("MOE_EXECUTOR", None)
    return env


# --- dagster definitions validate --------------------------------------------------------


def _validate(tmp_path: Path, *where: str) -> subprocess.CompletedProcess[str]:
    """`dagster definitions validate` of a code location."""
    return subprocess.run(
        [DAGSTER, "definitions", "validate", *where],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    proc = _validate(tmp_path, "-m", "pipelines.definitions")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deploy_code_location_validates(tmp_path: Path) -> None:
    """deploy/definitions.py with the default executor: what the cluster image loads,
    minus the executor (which needs dagster-k8s / dagster-celery)."""
    proc = _validate(tmp_path, "-f", "deploy/definitions.py", "-d", str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- every YAML file loads; names exist ---------------------------------------------------


def test_every_yaml_file_loads() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 6, files
    for path in files:
        assert _yaml_docs(path), f"{path} is empty"


def test_op_tags_name_existing_assets(base_defs: Definitions, deploy_module) -> None:
    doc = yaml.safe_load((DEPLOY / "op_tags.yaml").read_text())
    named = set(doc["assets"])
    assert named <= _asset_names(base_defs), named - _asset_names(base_defs)
    assert named >= EMBEDDING_ASSETS
    tags = deploy_module.load_op_tags()
    for name in EMBEDDING_ASSETS:
        k8s = json.loads(tags[name]["dagster-k8s/config"])
        limits = k8s["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1", name
        assert k8s["pod_spec_config"]["node_selector"], name
        assert tags[name]["dagster-celery/queue"] == "gpu", name


def test_backfills_name_existing_jobs_assets_and_partitions(base_defs: Definitions) -> None:
    doc = yaml.safe_load((DEPLOY / "backfills.yaml").read_text())
    graph = base_defs.resolve_asset_graph()
    assert {b["job"] for b in doc["backfills"]} == {
        "cxr_embedding_backfill",
        "note_embedding_backfill",
    }
    for b in doc["backfills"]:
        job = base_defs.resolve_job_def(b["job"])
        node = graph.get(AssetKey(b["asset"]))
        assert node.group_name == "scale_out"
        assert [n.name for n in job.nodes] == [b["asset"]]
        assert job.partitions_def is not None
        assert list(job.partitions_def.get_partition_keys()) == b["partitions"]
        then = base_defs.resolve_job_def(b["then"]["job"])
        assert AssetKey(b["then"]["asset"]) in then.asset_layer.executable_asset_keys


def test_helm_values_point_at_the_deploy_code_location() -> None:
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    (dep,) = values["dagster-user-deployments"]["deployments"]
    args = dep["dagsterApiGrpcArgs"]
    target = args[args.index("--python-file") + 1]
    assert target.endswith("deploy/definitions.py")
    assert (ROOT / "deploy" / "definitions.py").is_file()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    env = {}
    for doc in _yaml_docs(DEPLOY / "k8s" / "storage.yaml"):
        if doc["kind"] == "ConfigMap":
            env = doc["data"]
    assert env["MOE_EXECUTOR"] == "k8s"
    assert {"MOE_DATA_DIR", "MOE_MIMIC_ROOT"} <= set(env)
    mounts = {m["mountPath"] for m in dep["volumeMounts"]}
    assert {env["MOE_DATA_DIR"], env["MOE_MIMIC_ROOT"]} <= mounts


def test_executor_files_have_an_execution_config_block(deploy_module) -> None:
    k8s = deploy_module.executor_config("k8s")
    assert k8s["job_namespace"] and k8s["step_k8s_config"]
    celery = deploy_module.executor_config("celery")
    assert celery["broker"] and celery["backend"]


# --- the cluster code location, without the extra packages --------------------------------


def test_deploy_definitions_same_graph_plus_op_tags(base_defs: Definitions, deploy_module) -> None:
    defs = deploy_module.build_definitions("multiprocess")
    assert _asset_names(defs) == _asset_names(base_defs)
    assert {j.name for j in defs.jobs} == {j.name for j in base_defs.jobs}  # type: ignore[union-attr]
    for job_name, asset in [
        ("cxr_embedding_backfill", "cxr_embedding_cache"),
        ("note_embedding_backfill", "note_embedding_cache"),
    ]:
        (node,) = deploy_module.build_definitions("multiprocess").resolve_job_def(job_name).nodes
        assert node.name == asset
        assert "dagster-k8s/config" in node.tags and node.tags["dagster-celery/queue"] == "gpu"
    # The local code location is untouched.
    (node,) = base_defs.resolve_job_def("cxr_embedding_backfill").nodes
    assert "dagster-k8s/config" not in node.tags


def test_unknown_asset_in_op_tags_is_an_error(tmp_path: Path, deploy_module) -> None:
    bad = tmp_path / "op_tags.yaml"
    bad.write_text("assets:\n  no_such_asset:\n    dagster-celery/queue: gpu\n")
    with pytest.raises(ValueError, match="no_such_asset"):
        deploy_module.build_definitions("multiprocess", op_tags_file=bad)


def test_unknown_executor_is_an_error(deploy_module) -> None:
    with pytest.raises(ValueError, match="MOE_EXECUTOR"):
        deploy_module.executor_for("spark")


# --- deeper, with dagster-k8s / dagster-celery importable ----------------------------------


@pytest.mark.skipif(not has_k8s, reason="dagster-k8s not installed (it comes with the dev extra)")
def test_k8s_executor_and_step_pods(deploy_module) -> None:
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    defs = deploy_module.build_definitions("k8s")
    job = defs.resolve_job_def("cxr_embedding_backfill")
    assert job.executor_def.name == "k8s_job_executor"
    # The configured executor accepts an empty run config (its config is baked in) and the
    # executor file as run config too.
    validate_run_config(job, {})
    doc = yaml.safe_load((DEPLOY / "k8s" / "executor.yaml").read_text())
    from dagster_k8s import k8s_job_executor

    plain = deploy_module.build_definitions("multiprocess")
    unconfigured = Definitions(
        assets=plain.assets,
        jobs=plain.jobs,
        resources=plain.resources,
        executor=k8s_job_executor,
    ).resolve_job_def("cxr_embedding_backfill")
    validate_run_config(unconfigured, doc)

    # What the executor builds for the step: node selector, toleration, GPU limit.
    (node,) = job.nodes
    user_config = get_user_defined_k8s_config(dict(node.tags))
    k8s_job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(
            job_image="registry.example.org/moe-health:0.1.0",
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="dagster-instance",
        ),
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test",
        user_defined_k8s_config=user_config,
        pod_name="dagster-step-test",
        component="step_worker",
    )
    pod = k8s_job.spec.template.spec
    assert pod.node_selector == {"moe-health/pool": "gpu"}
    assert pod.tolerations[0].key == "nvidia.com/gpu"
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"


@pytest.mark.skipif(
    not has_celery, reason="dagster-celery not installed (it comes with the dev extra)"
)
def test_celery_executor_config(deploy_module, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_celery.cli import get_validated_config

    monkeypatch.setenv("MOE_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MOE_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    config = get_validated_config(str(DEPLOY / "celery" / "executor.yaml"))
    assert config["broker"] == "redis://127.0.0.1:6379/0"  # read from the environment
    assert config["backend"] == "redis://127.0.0.1:6379/1"
    defs = deploy_module.build_definitions("celery")
    job = defs.resolve_job_def("note_embedding_backfill")
    assert job.executor_def.name == "celery_executor"
    validate_run_config(job, {})
