"""Make the bare `dagster asset materialize --select moe_mortality` work in the activated venv.

Dagster 1.13's `asset materialize` ignores `[tool.dagster]` and `workspace.yaml`; it reads
`DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME`. We append that (and offline/telemetry-safe
defaults) to the venv's activate script once; re-running is a no-op.
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN = "# >>> moe-health >>>"
END = "# <<< moe-health <<<"


def activate_block(project_dir: Path) -> str:
    return "\n".join(
        [
            BEGIN,
            "export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=pipelines.definitions",
            f'export DAGSTER_HOME="${{DAGSTER_HOME:-{project_dir}/.dagster}}"',
            "export HF_HUB_OFFLINE=1",
            "export TRANSFORMERS_OFFLINE=1",
            '(umask 077 && mkdir -p "$DAGSTER_HOME")',
            f'[ -f "$DAGSTER_HOME/dagster.yaml" ] || '
            f'cp "{project_dir}/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"',
            END,
            "",
        ]
    )


def install(venv: Path, project_dir: Path) -> bool:
    """Add the block to `<venv>/bin/activate`; return False when it was already there."""
    activate = venv / "bin" / "activate"
    text = activate.read_text()
    if BEGIN in text:
        return False
    activate.write_text(text.rstrip("\n") + "\n\n" + activate_block(project_dir))
    return True


if __name__ == "__main__":
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv").resolve()
    changed = install(venv, Path.cwd().resolve())
    print(f"{venv}/bin/activate: {'updated' if changed else 'already set up'}")
