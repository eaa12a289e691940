"""The import rules of docs/architecture.md, read from the source (ast), not from imports
that happen to run: wiring (`pipelines/`) -> `assets/` -> (`moe/`, `sql/`, `plumbing/`).

`layer_violations` is a pure function of a source tree; it is tested on small fake trees
below (each rule must catch a break) and then run on this repository.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Rule:
    """What the modules of one top-level folder may import.

    `may_import`: project modules (a name covers its submodules) allowed beside the folder
    itself. `never_reach`: external top-level packages (prefix match: `dagster` covers
    `dagster_duckdb`) that must not be imported by the folder, nor by anything in the
    project it imports (transitively).
    """

    may_import: tuple[str, ...]
    never_reach: tuple[str, ...] = ()
    never_import: tuple[str, ...] = ()  # external packages banned in the folder itself


# Top-level users may import anything, the wiring included: bench/pipeline_run.py,
# deploy/definitions.py and scripts/ui_check.py load `pipelines.definitions`.
USERS = ("bench", "tests", "scripts", "deploy")
RULES: dict[str, Rule] = {
    "pipelines": Rule(may_import=("assets", "plumbing")),
    "assets": Rule(may_import=("moe", "sql", "plumbing", "synthetic")),
    "moe": Rule(may_import=("plumbing.atomic", "plumbing.bounds", "plumbing.tasks"), never_reach=("dagster",)),
    "sql": Rule(may_import=("plumbing",), never_import=("dagster",)),
    "plumbing": Rule(may_import=()),
    "synthetic": Rule(may_import=("plumbing.atomic",), never_reach=("dagster",)),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, folders: list[str]) -> dict[str, Path]:
    return {
        module_name(root, p): p
        for folder in folders
        for p in sorted((root / folder).rglob("*.py"))
        if ".venv" not in p.parts
    }


def imported_names(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module `name` imports (anywhere in the file, functions included), absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            out.add(stem)
            # `from pkg import sub` imports the module pkg.sub when there is one
            out |= {f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in modules}
    return out


def _covers(allowed: str, name: str) -> bool:
    return name == allowed or name.startswith(allowed + ".")


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def layer_violations(
    root: Path, rules: dict[str, Rule], users: tuple[str, ...] = USERS
) -> list[str]:
    """One line per import that breaks `rules`, for the folders of `root` they name
    (`users` are project folders that no rule checks and none of the others may import)."""
    modules = project_modules(root, [f for f in rules if (root / f).is_dir()])
    tops = set(rules) | set(users)
    imports = {m: imported_names(m, p, modules) for m, p in modules.items()}

    def project(name: str) -> bool:
        return name.split(".")[0] in tops

    def externals_reached(start: str) -> dict[str, list[str]]:
        """External top-level packages reached from `start`, each with one import path."""
        seen: dict[str, list[str]] = {start: [start]}
        stack, found = [start], {}
        while stack:
            cur = stack.pop()
            for dep in sorted(imports.get(cur, ())):
                if not project(dep):
                    found.setdefault(dep.split(".")[0], seen[cur])
                    continue
                for step in [*_parents(dep), dep]:  # importing a.b runs a/__init__ first
                    if step in modules and step not in seen:
                        seen[step] = [*seen[cur], step]
                        stack.append(step)
        return found

    problems = []
    for mod, names in sorted(imports.items()):
        folder = mod.split(".")[0]
        rule = rules[folder]
        for dep in sorted(names):
            top = dep.split(".")[0]
            if project(dep):
                if top != folder and not any(_covers(a, dep) for a in rule.may_import):
                    problems.append(f"{mod} imports {dep} ({folder}/ may not)")
            elif any(top.startswith(x) for x in rule.never_import):
                problems.append(f"{mod} imports {dep} ({folder}/ may not import {top})")
        for ext, via in externals_reached(mod).items():
            if any(ext.startswith(x) for x in rule.never_reach):
                problems.append(f"{mod} reaches {ext} via {' -> '.join(via)}")
    return problems


# --------------------------------------------------------------------------- the repository


def test_the_repository_keeps_its_import_rules():
    assert layer_violations(ROOT, RULES) == []


def test_every_top_level_package_has_a_rule_or_is_a_top_level_user():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    folders_with_python = {p.parts[0] for p in (x.relative_to(ROOT) for x in ROOT.glob("*/*.py"))}
    assert (packages | folders_with_python) - {".venv"} <= set(RULES) | set(USERS)


def test_the_checker_reads_every_module_of_the_repository():
    """A checker that read nothing would pass: it must see the known import edges."""
    modules = project_modules(ROOT, list(RULES))
    assert {"pipelines.definitions", "assets.models", "moe.embedding_cache"} <= set(modules)
    assert "plumbing.atomic" in imported_names(
        "moe.embedding_cache", modules["moe.embedding_cache"], modules
    )
    assert "assets" in imported_names(
        "pipelines.definitions", modules["pipelines.definitions"], modules
    )


# --------------------------------------------------------------------------- fake trees


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for folder in RULES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "plumbing" / "atomic.py").write_text("import os\n")
    (tmp_path / "plumbing" / "resources.py").write_text("import dagster\n")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_a_clean_fake_tree_passes(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pipelines/definitions.py": "import assets.models\nfrom plumbing import resources\n",
            "assets/models.py": "import moe.model\nfrom sql import build\nimport dagster\n",
            "moe/model.py": "import torch\nfrom plumbing.atomic import write\nfrom . import data\n",
            "moe/data.py": "import numpy\n",
            "sql/build.py": "import duckdb\nfrom plumbing import atomic\n",
            "synthetic/gen.py": "from plumbing.atomic import write\n",
        },
    )
    assert layer_violations(root, RULES) == []


BROKEN = [
    ("moe/m.py", "import dagster\n", "moe.m reaches dagster"),
    ("moe/m.py", "def f():\n    from dagster import asset\n", "moe.m reaches dagster"),
    ("moe/m.py", "from assets import models\n", "moe.m imports assets"),
    ("moe/m.py", "import pipelines.definitions\n", "moe.m imports pipelines.definitions"),
    ("moe/m.py", "from sql.build import x\n", "moe.m imports sql.build"),
    ("moe/m.py", "from plumbing import resources\n", "moe.m imports plumbing.resources"),
    ("moe/sub/m.py", "from ...assets import models\n", "moe.sub.m imports assets"),
    ("sql/m.py", "import moe\n", "sql.m imports moe"),
    ("sql/m.py", "from assets.cohort import c\n", "sql.m imports assets.cohort"),
    ("sql/m.py", "import dagster_duckdb\n", "sql.m imports dagster_duckdb"),
    ("plumbing/m.py", "from sql import build\n", "plumbing.m imports sql"),
    ("plumbing/m.py", "import moe.data\n", "plumbing.m imports moe.data"),
    ("plumbing/m.py", "import assets\n", "plumbing.m imports assets"),
    ("plumbing/m.py", "from pipelines import jobs\n", "plumbing.m imports pipelines"),
    ("synthetic/m.py", "from plumbing.settings import p\n", "synthetic.m imports plumbing.settings"),
    ("synthetic/m.py", "import moe\n", "synthetic.m imports moe"),
    ("assets/m.py", "from pipelines.jobs import j\n", "assets.m imports pipelines.jobs"),
    ("assets/m.py", "import bench.quality\n", "assets.m imports bench.quality"),
    ("pipelines/m.py", "import tests.fixtures\n", "pipelines.m imports tests.fixtures"),
]


@pytest.mark.parametrize(("rel", "text", "expected"), BROKEN, ids=[b[2] for b in BROKEN])
def test_each_rule_catches_a_break(tmp_path, rel, text, expected):
    root = _tree(tmp_path, {rel: text, "bench/__init__.py": "", "tests/__init__.py": ""})
    problems = layer_violations(root, RULES)
    assert any(p.startswith(expected) for p in problems), problems


def test_dagster_reached_through_the_plumbing_is_caught(tmp_path):
    """moe may import plumbing.atomic; if atomic came to import Dagster, moe would too."""
    root = _tree(tmp_path, {"moe/m.py": "from plumbing.atomic import write\n"})
    assert layer_violations(root, RULES) == []
    (root / "plumbing" / "atomic.py").write_text("from plumbing import resources\n")
    assert layer_violations(root, RULES) == [
        "moe.m reaches dagster via moe.m -> plumbing.atomic -> plumbing.resources"
    ]


def test_a_package_init_is_run_by_its_submodules(tmp_path):
    root = _tree(tmp_path, {"moe/m.py": "from plumbing.atomic import write\n"})
    (root / "plumbing" / "__init__.py").write_text("from plumbing.resources import R\n")
    problems = layer_violations(root, RULES)
    assert "moe.m reaches dagster via moe.m -> plumbing -> plumbing.resources" in problems
