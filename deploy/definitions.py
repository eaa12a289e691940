"""The cluster code location: `pipelines.definitions` unchanged, plus executor and op tags.

    MOE_EXECUTOR=k8s     dagster api grpc -f deploy/definitions.py ...   (needs dagster-k8s)
    MOE_EXECUTOR=celery  dagster api grpc -f deploy/definitions.py ...   (needs dagster-celery)

Same assets, checks, jobs, schedule and sensors as the local code location; two things
change:

- the executor of every job: `k8s_job_executor` (each step in its own Kubernetes Job/pod)
  or `celery_executor` (each step a Celery task). Unset or `multiprocess`: Dagster's
  default, as in `make ui`;
- op tags from `deploy/op_tags.yaml` on the named assets: `dagster-k8s/config` (GPU node
  selector, tolerations, resource limits for the embedding steps) and
  `dagster-celery/queue` (the `gpu` queue). Each executor reads only its own tags.

Nothing under `assets/` or `pipelines/` knows about the cluster: the local run stays
dependency-free, and the tags live in one YAML file that the tests check.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, AssetsDefinition, Definitions, ExecutorDefinition

DEPLOY = Path(__file__).resolve().parent
OP_TAGS_FILE = DEPLOY / "op_tags.yaml"
EXECUTORS = ("multiprocess", "k8s", "celery")


def load_op_tags(path: Path = OP_TAGS_FILE) -> dict[str, dict[str, str]]:
    """asset name -> op tags, with structured values JSON-encoded as Dagster stores them."""
    doc = yaml.safe_load(path.read_text())
    out: dict[str, dict[str, str]] = {}
    for name, tags in (doc.get("assets") or {}).items():
        out[name] = {
            k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in tags.items()
        }
    return out


def with_op_tags(assets_def: AssetsDefinition, tags: Mapping[str, str]) -> AssetsDefinition:
    """The same asset whose op carries `tags` too (what `@asset(op_tags=...)` would set).

    Dagster has no public call that adds op tags to an existing AssetsDefinition, so this
    copies the op with merged tags and rebuilds the definition from its attributes.
    """
    op = copy.copy(assets_def.op)
    op._tags = {**assets_def.op.tags, **tags}  # noqa: SLF001 - see docstring
    attrs = assets_def.get_attributes_dict()
    attrs["node_def"] = op
    return AssetsDefinition.dagster_internal_init(**attrs)


def executor_config(name: str) -> dict[str, Any]:
    """The `execution.config` block of deploy/<k8s|celery>/executor.yaml."""
    doc = yaml.safe_load((DEPLOY / name / "executor.yaml").read_text())
    return dict(doc["execution"]["config"])


# executor name -> (module, executor definition, what the image needs for it)
_EXECUTOR_IMPORTS = {
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s in the image (pip install dagster-k8s)"),
    "celery": ("dagster_celery", "celery_executor", "dagster-celery (pip install dagster-celery)"),
}


def executor_for(name: str) -> ExecutorDefinition | None:
    """None (Dagster's default executor) for "" or "multiprocess"; else the configured
    k8s or Celery executor. The import happens only here, so the local code location never
    needs dagster-k8s or dagster-celery."""
    if name in ("", "multiprocess"):
        return None
    if name not in _EXECUTOR_IMPORTS:
        raise ValueError(f"MOE_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    module, executor, needs = _EXECUTOR_IMPORTS[name]
    try:
        definition = getattr(importlib.import_module(module), executor)
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise RuntimeError(f"MOE_EXECUTOR={name} needs {needs}.") from exc
    return definition.configured(executor_config(name), name=executor)


def build_definitions(
    executor: str | None = None, op_tags_file: Path = OP_TAGS_FILE
) -> Definitions:
    from pipelines.definitions import defs as base

    executor = os.environ.get("MOE_EXECUTOR", "") if executor is None else executor
    tags = load_op_tags(op_tags_file)
    by_key = {AssetKey(name): t for name, t in tags.items()}
    assets: list[Any] = []
    seen: set[AssetKey] = set()
    for a in base.assets or []:
        if isinstance(a, AssetsDefinition) and a.key in by_key and len(a.keys) == 1:
            seen.add(a.key)
            a = with_op_tags(a, by_key[a.key])
        assets.append(a)
    unknown = sorted(k.to_user_string() for k in set(by_key) - seen)
    if unknown:
        raise ValueError(f"{op_tags_file}: no such (single-asset) asset: {', '.join(unknown)}")
    return Definitions(
        assets=assets,
        asset_checks=base.asset_checks,
        jobs=base.jobs,
        schedules=base.schedules,
        sensors=base.sensors,
        resources=base.resources,
        executor=executor_for(executor),
    )


defs = build_definitions()
