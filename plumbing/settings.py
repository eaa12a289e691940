"""Where the pipeline reads and writes, resolved once from the environment.

`MOE_MIMIC_ROOT` unset means the demo profile: raw files are generated into
`$MOE_DATA_DIR/demo/raw` by the `mimic_raw` asset. Set, it points at a PhysioNet layout
(`hosp/`, `icu/`, optionally `note/` and `cxr/`) and the demo generator plays no part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    data_dir: Path
    mimic_root: Path | None

    @property
    def is_demo(self) -> bool:
        return self.mimic_root is None

    @property
    def raw_root(self) -> Path:
        return self.mimic_root if self.mimic_root is not None else self.data_dir / "demo" / "raw"

    @property
    def truth_path(self) -> Path:
        return self.data_dir / "demo" / "truth.parquet"

    def table(self, name: str) -> Path:
        """`$MOE_DATA_DIR/<asset name>.parquet`, the spec's output convention."""
        return self.data_dir / f"{name}.parquet"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` readable by its owner only (0700): it will hold staged note text.

    An existing folder is left as the user set it up (a shared, access-controlled project
    folder is their call); only a folder this project creates gets the strict mode.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def materialize_first(
    path: Path, upstream: str, downstream: str, problem: str = "does not exist"
) -> str:
    """The one message for an input table that is not there: which asset builds it, and
    the command that builds it with everything it needs."""
    return (
        f"{path} {problem}: the upstream asset `{upstream}` was never materialized on this "
        f"data folder. Materialize it together with its own upstream assets: dagster asset "
        f"materialize -m pipelines.definitions --select '*{downstream}' (or run `make demo`)."
    )


def project_paths(environ: dict[str, str] | None = None) -> ProjectPaths:
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("MOE_DATA_DIR") or "./data").expanduser().resolve()
    root = env.get("MOE_MIMIC_ROOT") or None
    return ProjectPaths(
        data_dir=data_dir,
        mimic_root=Path(root).expanduser().resolve() if root else None,
    )
