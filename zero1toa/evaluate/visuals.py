"""What people look at: turntable and expression videos, the views x expressions contact sheet,
and training plots (loss per round, final metrics per round) as PNG plus CSV/JSON for DVC.

Rendering helpers here take an :class:`EvalScene` (avatar, head, reference camera, the
portrait's expression) so every video and metric renders the avatar the same way: cameras orbit
the head relative to the photo's camera (yaw 0 = the photo's view), expressions are added to the
portrait's own expression (as the temporal stage's clips are).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..avatar.gaussians import BoundGaussians
from ..avatar.render import render_avatar_frames
from ..head.base import HeadModel, HeadPose
from ..progressive.schedules import orbit_from_reference
from ..render.camera import Cameras
from ..render.video import contact_sheet, to_uint8_frames, write_png, write_video
from ..utils.io import atomic_path, write_json_atomic


@dataclass
class EvalScene:
    """The avatar and the portrait's view/expression, at the evaluation resolution."""

    gaussians: BoundGaussians
    head: HeadModel
    reference_camera: Cameras  # 1 camera (any resolution; resized on use)
    reference_expression: Tensor  # [E]
    reference_jaw: Tensor  # [3]
    target: Tensor  # [3] orbit centre
    resolution: int
    background: float = 1.0

    def cameras(self, yaws_deg, elevations_deg=None, resolution: int | None = None) -> Cameras:
        yaws = np.asarray(yaws_deg, dtype=np.float64).reshape(-1)
        elev = np.zeros_like(yaws) if elevations_deg is None else np.broadcast_to(np.asarray(elevations_deg, np.float64), yaws.shape)
        return orbit_from_reference(self.reference_camera, yaws, elev, self.target, resolution or self.resolution)

    def preset(self, name: str, magnitude: float = 1.0) -> tuple[Tensor, Tensor]:
        """(expression [E], jaw [3]) of a named preset on top of the portrait's expression."""
        e, j = self.head.expression_preset(name, magnitude)
        return self.reference_expression + e.float().cpu(), self.reference_jaw + j.float().cpu()

    def render(self, cameras: Cameras, expressions: Tensor, jaws: Tensor) -> Tensor:
        """rgb [F, 3, H, W] in [0, 1] (CPU) for per-frame cameras, expressions [F, E], jaws [F, 3]."""
        pose = HeadPose.neutral(len(cameras))
        pose.jaw = jaws.reshape(len(cameras), 3).float().clone()
        device = self.gaussians.params["means"].device
        rgb, _ = render_avatar_frames(self.gaussians, self.head, cameras.to(device), expressions.float(), pose, self.background)
        return rgb.cpu()

    def render_still(self, cameras: Cameras, expression: Tensor, jaw: Tensor) -> Tensor:
        n = len(cameras)
        return self.render(cameras, expression[None].expand(n, -1), jaw[None].expand(n, -1))


def turntable_frames(scene: EvalScene, frames: int) -> Tensor:
    """Yaw 0 -> 360 (endpoint excluded, so the video loops) at the photo's elevation."""
    yaws = np.linspace(0.0, 360.0, max(2, int(frames)), endpoint=False)
    return scene.render_still(scene.cameras(yaws), scene.reference_expression, scene.reference_jaw)


def expression_frames(scene: EvalScene, frames: int, preset: str = "expressions") -> Tensor:
    """A drive preset (default: the tour of every expression) at the photo's view."""
    from ..animate.drive import preset_sequence

    seq = preset_sequence(preset, scene.head, max(2, int(frames)), scene.reference_expression)
    jaws = scene.reference_jaw[None] + seq.pose.jaw
    return scene.render(scene.cameras(seq.yaws_deg), seq.expressions, jaws)


def grid_renders(scene: EvalScene, yaws_deg: list[float], expressions: list[str]) -> Tensor:
    """Renders for every (expression, view): [len(expressions) * len(yaws), 3, H, W], expression-major."""
    out = []
    cams = scene.cameras(yaws_deg)
    for name in expressions:
        e, j = scene.preset(name)
        out.append(scene.render_still(cams, e, j))
    return torch.cat(out)


def grid_sheet(renders: Tensor, yaws_deg: list[float], expressions: list[str]) -> np.ndarray:
    """Contact sheet: one row per expression, one column per view."""
    imgs = to_uint8_frames(renders)
    nv = len(yaws_deg)
    rows = [list(imgs[i * nv : (i + 1) * nv]) for i in range(len(expressions))]
    return contact_sheet(rows, labels_rows=list(expressions), labels_cols=[f"yaw {y:+.0f}" for y in yaws_deg])


def save_video(path: Path, frames: Tensor, fps: int) -> Path:
    return write_video(path, frames, fps=fps)


def save_png(path: Path, image: np.ndarray) -> Path:
    return write_png(path, image)


# ----------------------------------------------------------------------------- training plots


def round_histories(manifests: list[dict]) -> tuple[list[dict], list[dict]]:
    """Loss rows and per-round summary rows from round manifests (in DAG order).

    Loss rows: round, stage, step, global_step (steps of earlier rounds added), and every numeric
    loss term. Summary rows: round, final_loss, final_l1, num_gaussians, refreshes, ...
    """
    loss_rows: list[dict] = []
    summary: list[dict] = []
    offset = 0
    for man in manifests:
        name = man.get("node", "?")
        losses = (man.get("extra") or {}).get("losses") or []
        last = 0
        for row in losses:
            step = int(row.get("step", 0))
            last = max(last, step)
            rec = {"round": name, "stage": (man.get("extra") or {}).get("stage", ""), "step": step, "global_step": offset + step}
            rec.update({k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
            loss_rows.append(rec)
        offset += last
        m = man.get("metrics") or {}
        summary.append({"round": name, **{k: v for k, v in m.items() if k not in PROCESS_HISTORY and isinstance(v, (int, float)) and not isinstance(v, bool)}})
    return loss_rows, summary


#: Round metrics that describe how a run went (it was killed and resumed), not what it made: an
#: evaluation of identical avatars must give identical files, so they stay in the manifests.
PROCESS_HISTORY = frozenset({"resumed_from_iteration"})


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    cols = columns or sorted({k for r in rows for k in r}, key=lambda k: (k not in ("round", "stage", "step", "global_step"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return Path(path)


def _figure_png(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    from PIL import Image

    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def plot_loss_curves(loss_rows: list[dict], path: Path, terms: tuple[str, ...] = ("total", "l1")) -> Path:
    """Loss terms over the global iteration, one colour per round (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(terms), figsize=(5 * len(terms), 3.4), squeeze=False)
    rounds = list(dict.fromkeys(r["round"] for r in loss_rows))
    for ax, term in zip(axes[0], terms):
        for name in rounds:
            pts = [(r["global_step"], r[term]) for r in loss_rows if r["round"] == name and term in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, label=name)
        ax.set_xlabel("iteration (all rounds)")
        ax.set_ylabel(term)
        ax.set_title(f"{term} loss per round")
        ax.grid(alpha=0.3)
        if rounds:
            ax.legend(fontsize=7)
        if not loss_rows:
            ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    img = _figure_png(fig)
    plt.close(fig)
    return write_png(path, img)


def plot_metrics_per_round(summary: list[dict], path: Path, keys: tuple[str, ...] = ("final_loss", "final_l1", "num_gaussians")) -> Path:
    """Each round's final loss, L1 and Gaussian count (one panel each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    names = [r["round"] for r in summary]
    for ax, key in zip(axes[0], keys):
        vals = [r.get(key) for r in summary]
        xs = [i for i, v in enumerate(vals) if v is not None]
        ax.plot(xs, [vals[i] for i in xs], marker="o")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    img = _figure_png(fig)
    plt.close(fig)
    return write_png(path, img)


def write_plot_data(folder: Path, loss_rows: list[dict], summary: list[dict]) -> dict[str, Any]:
    """CSV (and one JSON) that ``dvc plots`` can draw offline (no vega CDN needed for --json)."""
    folder = Path(folder)
    write_csv(folder / "loss_curves.csv", loss_rows, ["round", "stage", "step", "global_step", "total", "l1"] + sorted(
        {k for r in loss_rows for k in r} - {"round", "stage", "step", "global_step", "total", "l1"}))
    write_csv(folder / "metrics_per_round.csv", summary)
    data = {"loss_curves": loss_rows, "metrics_per_round": summary}
    write_json_atomic(folder / "plots.json", data)
    return {
        "loss_curves": {"file": "plots/loss_curves.csv", "x": "global_step", "y": ["total", "l1"]},
        "metrics_per_round": {"file": "plots/metrics_per_round.csv", "x": "round", "y": ["final_loss", "final_l1", "num_gaussians"]},
    }


__all__ = [
    "EvalScene",
    "turntable_frames",
    "expression_frames",
    "grid_renders",
    "grid_sheet",
    "save_video",
    "save_png",
    "round_histories",
    "write_csv",
    "plot_loss_curves",
    "plot_metrics_per_round",
    "write_plot_data",
]
