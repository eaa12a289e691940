"""A setting's description and bounds (`About`), and the check of a value against them.

No Dagster import: the library's dataclasses (`sql.build.CohortParams`, `StagingParams`,
`moe.embed_config`'s settings) check their own values with the same table that
`plumbing.dagster_config.config_from` turns into the launchpad's pydantic bounds, so a bad
value is refused whether the run was launched from Dagster or the dataclass was built in a
notebook.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["About", "check_bounds"]

_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclasses.dataclass(frozen=True)
class About:
    """The launchpad's description of one setting and its bounds (pydantic's gt/ge/lt/le;
    on a list, they bound every item)."""

    description: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def bounds(self) -> dict[str, Any]:
        return {k: v for k in ("gt", "ge", "lt", "le") if (v := getattr(self, k)) is not None}

    def allowed(self) -> str:
        """The bounds in words: `> 0`, `>= 0 and <= 168`."""
        return " and ".join(f"{_SIGNS[k]} {v:g}" for k, v in self.bounds().items())

    def accepts(self, value: Any) -> bool:
        """Whether a number is within the bounds (NaN never is)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        b = self.bounds()
        return all(
            (
                ("gt" not in b or value > b["gt"]),
                ("ge" not in b or value >= b["ge"]),
                ("lt" not in b or value < b["lt"]),
                ("le" not in b or value <= b["le"]),
            )
        )


def check_bounds(obj: Any, about: Mapping[str, About]) -> None:
    """ValueError naming the field, the value and the allowed range when a field of `obj`
    with bounds in `about` is out of them (each item of a list or tuple)."""
    for name, a in about.items():
        if not a.bounds():
            continue
        value = getattr(obj, name)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if not a.accepts(item):
                raise ValueError(
                    f"{type(obj).__name__}.{name} = {item!r} is out of range: it must be "
                    f"a number {a.allowed()} ({a.description})"
                )
