"""Report figures, one function per figure (matplotlib, Agg backend, no display).

Each function takes plain data (prediction frames, tables from `moe.evaluation`), writes a
PNG to `path` and returns the path. `png_data_uri` shrinks a saved figure into a base64
data URI for Dagster's Markdown metadata.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from moe.metrics import auroc  # noqa: E402
from plumbing.atomic import atomic_path  # noqa: E402

DPI = 100


def _save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def roc_curves(preds: Mapping[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """Test ROC curve of each model (in the order of `preds`), its AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, pred in preds.items():
        t = pred[pred["split"] == "test"]
        y, p = t["y_true"].to_numpy(float), t["y_prob"].to_numpy(float)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        lw = 2.2 if name == "moe" else 1.0
        ax.plot(fpr, tpr, lw=lw, label=f"{name} ({auroc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right", title="model (AUROC)", title_fontsize=7)
    return _save(fig, path)


def calibration_curves(
    preds: Mapping[str, pd.DataFrame], path: str | Path, title: str, bins: int = 10
) -> Path:
    """Reliability diagram on test: mean predicted vs observed rate in equal-width bins."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, pred in preds.items():
        t = pred[pred["split"] == "test"]
        y, p = t["y_true"].to_numpy(float), t["y_prob"].to_numpy(float)
        if not len(y):
            continue
        idx = np.clip((p * bins).astype(int), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            s = idx == b
            if s.sum() >= 5:
                xs.append(p[s].mean())
                ys.append(y[s].mean())
        lw = 2.2 if name == "moe" else 1.0
        ax.plot(xs, ys, "o-", ms=3, lw=lw, label=name)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed event rate", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def robustness_plot(curves: Mapping[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """AUROC vs fraction of test stays with the modality that have it hidden. `curves` keys
    are labels such as 'moe: cxr'; same modality shares a colour, model a line style."""
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    colours: dict[str, str] = {}
    styles: dict[str, Any] = {"moe": "-"}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dashes: list[Any] = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
    for label, c in curves.items():
        model, _, mod = label.partition(": ")
        colour = colours.setdefault(mod, palette[len(colours) % len(palette)])
        style = styles.setdefault(model, dashes[(len(styles) - 1) % len(dashes)])
        ax.plot(100 * c["fraction"], c["auroc"], linestyle=style, marker="o", ms=3,
                color=colour, label=label)
    ax.set(xlabel="% of test stays with the modality that have it removed",
           ylabel="test AUROC", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def gate_heatmap(gates: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Mean gate weight per expert (columns) by availability pattern (rows, with n)."""
    data = gates.drop(columns=["n"], errors="ignore")
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * data.shape[1], 1.2 + 0.45 * data.shape[0]))
    im = ax.imshow(data.to_numpy(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(data.shape[1]), list(data.columns), rotation=45, ha="right", fontsize=8)
    n = gates["n"] if "n" in gates else pd.Series("", index=gates.index)
    ax.set_yticks(range(data.shape[0]), [f"{p} (n={k})" for p, k in zip(data.index, n,
                                                                       strict=True)], fontsize=8)
    vals = data.to_numpy(float)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = float(vals[i, j])
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 0.5 else "black")
    ax.set(xlabel="expert (modality subset)", ylabel="availability pattern", title=title)
    fig.colorbar(im, ax=ax, label="mean gate weight")
    return _save(fig, path)


def subgroup_plot(sub: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Test AUROC by sex and age band, one bar group per subgroup, one bar per model."""
    sub = sub.copy()
    sub["label"] = sub["group"] + ": " + sub["subgroup"].astype(str)
    wide = sub.pivot_table(index="label", columns="model", values="auroc", sort=False)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    k = max(wide.shape[1], 1)
    x = np.arange(len(wide))
    for j, model in enumerate(wide.columns):
        ax.bar(x + (j - (k - 1) / 2) * 0.8 / k, wide[model].to_numpy(float), 0.8 / k,
               label=str(model))
    ax.set_xticks(x, list(wide.index), rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test AUROC", title=title, ylim=(0.4, 1.0))
    ax.legend(fontsize=7)
    return _save(fig, path)


def png_data_uri(path: str | Path, max_px: int = 420) -> str:
    """A small PNG (longest side `max_px`) of a saved figure as a `data:` URI."""
    import io

    img = plt.imread(str(path))
    h, w = img.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    fig = plt.figure(figsize=(w * scale / DPI, h * scale / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, interpolation="antialiased")
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


__all__ = ["calibration_curves", "gate_heatmap", "png_data_uri", "robustness_plot",
           "roc_curves", "subgroup_plot"]
