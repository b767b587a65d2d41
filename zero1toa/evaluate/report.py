"""One self-contained HTML page comparing runs: metrics, contact sheets, loss plots, lineage.

Self-contained on purpose: the page is mailed around, archived with a paper, opened on machines
without network access. So there is no CDN, no script and no external request: CSS is inline,
images are base64 ``data:`` URIs, tables are plain HTML (pandas ``to_html``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any

from ..utils.io import read_json, write_text_atomic

#: Metrics shown first in the comparison table (others follow alphabetically).
PREFERRED_COLUMNS = (
    "clip_score_vit_l_14",
    "clip_score_vit_b_16",
    "clip_score_vit_b_32",
    "clip_identity_vit_b_32",
    "psnr_reference",
    "ssim_reference",
    "landmark_error",
    "mouth_open_render",
    "mouth_open_driving",
    "face_detection_rate",
    "temporal_change_expression",
    "temporal_jitter_expression",
    "temporal_change_camera",
    "determinism_max_abs_diff",
    "fps_render",
    "fps_animate_render",
    "num_gaussians",
    "resolution",
)

#: Per-node metrics worth a glance in the lineage table.
LINEAGE_METRICS = ("reprojection_error_px", "final_loss", "final_l1", "num_gaussians", "dataset_samples", "psnr_reference", "landmark_error", "fps_render")

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1d232a; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px 0; }
.meta { color: #667; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 12px 0; }
th, td { border: 1px solid #c9ced6; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #eef1f5; } td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #f8f9fb; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; padding: 8px; border: 1px solid #dde; border-radius: 4px; background: #fbfcfd; }
figcaption { font-size: 12px; font-weight: 600; margin-bottom: 6px; }
img { display: block; max-width: 100%; image-rendering: auto; }
.note { color: #8a4b00; font-size: 12px; } code { background: #f1f3f6; padding: 0 3px; }
"""


def data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _run_names(run_dirs: list[Path]) -> list[str]:
    """Folder names, made unique with their parent when two runs share a name."""
    names = [p.name for p in run_dirs]
    out = []
    for p, n in zip(run_dirs, names):
        out.append(f"{p.parent.name}/{n}" if names.count(n) > 1 else n)
    return out


def _short(digest: Any, n: int = 10) -> str:
    return str(digest)[:n] if digest else ""


def format_value(value: Any) -> str:
    """Counts as integers, other numbers with 4 significant digits, None as empty."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e12:
            return str(int(value))
        return f"{value:.4g}"
    return "" if value is None else str(value)


_fmt = format_value


def load_metrics(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "evaluate" / "metrics.json"
    return read_json(path) if path.is_file() else None


def metrics_frame(run_dirs: list[Path], names: list[str]):
    """pandas DataFrame: one row per run, one column per flat metric (None where null)."""
    import pandas as pd

    rows = []
    for run, name in zip(run_dirs, names):
        m = load_metrics(run) or {}
        rows.append({"run": name, **{k: v for k, v in m.items() if k not in ("reasons", "details") and not isinstance(v, (dict, list))}})
    df = pd.DataFrame(rows).set_index("run")
    cols = [c for c in PREFERRED_COLUMNS if c in df.columns] + sorted(c for c in df.columns if c not in PREFERRED_COLUMNS)
    return df[cols] if len(cols) else df


def lineage_rows(run_dir: Path) -> list[dict[str, str]]:
    """One row per node manifest of a run: what it read and wrote (digests), code, seed, metrics."""
    from ..runfolder import read_run_manifests

    rows = []
    order = {"preprocess": 0, "fit_head": 1, "evaluate": 8, "export": 9}
    found = read_run_manifests(run_dir)

    def key(item):
        name = item[0]
        stage, _, k = name.partition("_")
        if stage in ("spatial", "temporal") and k.isdigit():
            return (2 if stage == "spatial" else 3, int(k))
        return (order.get(name, 5), 0)

    for name, man in sorted(found.items(), key=key):
        inputs = man.get("inputs") or {}
        outputs = man.get("outputs") or {}
        outs = ", ".join(f"{k}:{_short(v)}" for k, v in list(outputs.items())[:4])
        if len(outputs) > 4:
            outs += f", ... (+{len(outputs) - 4})"
        metrics = man.get("metrics") or {}
        shown = ", ".join(f"{k}={_fmt(metrics[k])}" for k in LINEAGE_METRICS if metrics.get(k) is not None)
        rows.append(
            {
                "node": name,
                "folder": man.get("folder", ""),
                "inputs": ", ".join(f"{k}:{_short(v)}" for k, v in inputs.items()),
                "outputs": outs,
                "code": _short(man.get("code_version"), 12),
                "seed": _fmt(man.get("seed")),
                "metrics": shown,
            }
        )
    return rows


def _table(rows: list[dict[str, str]], cls: str) -> str:
    import pandas as pd

    if not rows:
        return "<p class='note'>no node manifests found</p>"
    return pd.DataFrame(rows).to_html(index=False, classes=cls, border=0, escape=True)


def _figure(path: Path, caption: str, width: int | None = None) -> str:
    style = f" style='width:{width}px'" if width else ""
    if not Path(path).is_file():
        return f"<figure><figcaption>{html.escape(caption)}</figcaption><p class='note'>missing: {html.escape(str(path))}</p></figure>"
    return f"<figure><figcaption>{html.escape(caption)}</figcaption><img{style} alt='{html.escape(caption)}' src='{data_uri(path)}'></figure>"


def _viewer_link(run: Path, name: str, out: Path) -> str:
    """A link to the run's viewer page where ``zero1toa view RUN`` writes it (relative to the report,
    so it works from disk); the report does not embed it (about 1 MB per run)."""
    import os

    from ..viewer.page import default_view_path

    page = default_view_path(run)
    if not page.exists():
        return f"<li><b>{html.escape(name)}</b>: no viewer page yet (run <code>zero1toa view {html.escape(str(run))}</code>)</li>"
    href = Path(os.path.relpath(page.resolve(), out.resolve().parent)).as_posix()
    return f"<li><b>{html.escape(name)}</b>: <a class='viewer' href='{html.escape(href)}'>animate the avatar in the browser</a> ({html.escape(str(page))})</li>"


def build_report(run_dirs: list[Path], out: Path, title: str = "zero1toa: run comparison") -> Path:
    """Write the comparison page for ``run_dirs`` to ``out`` (atomically) and return its path."""
    run_dirs = [Path(r) for r in run_dirs]
    for r in run_dirs:
        if not r.is_dir():
            raise FileNotFoundError(f"run folder not found: {r}")
    names = _run_names(run_dirs)
    df = metrics_frame(run_dirs, names)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{len(run_dirs)} run(s); generated {_dt.datetime.now().isoformat(timespec='seconds')}; "
        "values from each run's <code>evaluate/metrics.json</code>, lineage from its node manifests.</p>",
        "<h2>Metrics</h2>",
        df.reset_index().to_html(index=False, classes="metrics", border=0, na_rep="null", float_format=format_value, table_id="metrics"),
    ]
    notes = []
    for run, name in zip(run_dirs, names):
        m = load_metrics(run)
        if m is None:
            notes.append(f"<li><b>{html.escape(name)}</b>: not evaluated (run <code>zero1toa evaluate {html.escape(str(run))}</code>)</li>")
            continue
        by_reason: dict[str, list[str]] = {}
        for key, reason in (m.get("reasons") or {}).items():
            by_reason.setdefault(str(reason), []).append(key)
        for reason, keys in by_reason.items():
            codes = ", ".join(f"<code>{html.escape(k)}</code>" for k in keys)
            notes.append(f"<li><b>{html.escape(name)}</b> {codes}: {html.escape(reason)}</li>")
    if notes:
        parts += ["<h3>Why some values are null</h3><ul class='note'>", *notes, "</ul>"]

    parts.append("<h2>In the browser</h2><ul>")
    parts += [_viewer_link(run, name, Path(out)) for run, name in zip(run_dirs, names)]
    parts.append("</ul>")
    parts.append("<h2>Contact sheets (rows: expressions, columns: views)</h2><div class='row'>")
    parts += [_figure(run / "evaluate" / "contact_sheet.png", name) for run, name in zip(run_dirs, names)]
    parts.append("</div><h2>Training curves</h2>")
    for run, name in zip(run_dirs, names):
        parts.append(f"<h3>{html.escape(name)}</h3><div class='row'>")
        parts.append(_figure(run / "evaluate" / "plots" / "loss_curves.png", "loss per round", 640))
        parts.append(_figure(run / "evaluate" / "plots" / "metrics_per_round.png", "final metrics per round", 640))
        parts.append("</div>")
    parts.append("<h2>Lineage</h2>")
    for run, name in zip(run_dirs, names):
        parts.append(f"<h3>{html.escape(name)} <span class='meta'>{html.escape(str(run.resolve()))}</span></h3>")
        parts.append(_table(lineage_rows(run), "lineage"))
    parts.append("</body></html>\n")
    out = Path(out)
    write_text_atomic(out, "\n".join(parts))
    return out


__all__ = ["build_report", "metrics_frame", "lineage_rows", "data_uri", "load_metrics", "format_value"]
