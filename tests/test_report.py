"""The comparison report: one self-contained HTML file, checked as text and in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from zero1toa.env import apply_defaults

apply_defaults()
sys.path.insert(0, str(Path(__file__).parent))
import evaluate_fixtures as fx  # noqa: E402

from zero1toa.config import from_dict  # noqa: E402
from zero1toa.evaluate.report import build_report, format_value, lineage_rows  # noqa: E402
from zero1toa.utils.io import read_json  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same portrait: one evaluated, one not (yet)."""
    from zero1toa.evaluate.run import evaluate_run

    base = tmp_path_factory.getbasetemp()
    src = fx.build_smoke_run(base / "shared_runs")
    root = tmp_path_factory.mktemp("report_runs")
    a, b = root / "alpha", root / "beta"
    for dst in (a, b):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("evaluate"))
    cfg = from_dict(fx.smoke_dict(root, "alpha"))
    evaluate_run(a, "temporal/round_1", cfg.evaluate, seed=0)
    return a, b


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    return build_report(list(runs), tmp_path_factory.mktemp("report") / "report.html")


class _Tables(HTMLParser):
    """Rows (lists of cell texts) of every table, keyed by the table's id or class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.imgs: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html_text: str) -> _Tables:
    p = _Tables()
    p.feed(html_text)
    return p


def _check_metrics_rows(html_text: str, run_a: Path) -> None:
    parsed = _parse(html_text)
    rows = parsed.tables["metrics"]
    header, body = rows[0], rows[1:]
    assert header[0] == "run"
    by_run = {r[0]: dict(zip(header, r)) for r in body}
    assert set(by_run) == {"alpha", "beta"}
    m = read_json(run_a / "evaluate" / "metrics.json")
    assert by_run["alpha"]["psnr_reference"] == format_value(float(m["psnr_reference"]))
    assert by_run["alpha"]["num_gaussians"] == str(m["num_gaussians"])
    assert by_run["alpha"]["clip_score_vit_l_14"] == "null"
    assert by_run["beta"]["psnr_reference"] == "null"


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", text), "external resource referenced"
    assert "<script" not in text and "<link" not in text and "@import" not in text
    parsed = _parse(text)
    assert parsed.imgs and all(src.startswith("data:image/png;base64,") for src in parsed.imgs)
    # alpha: contact sheet + two plots; beta (not evaluated) has none of them
    assert len(parsed.imgs) == 3


def test_report_tables(report, runs):
    a, b = runs
    text = report.read_text(encoding="utf-8")
    _check_metrics_rows(text, a)
    assert "not evaluated" in text and f"zero1toa evaluate {b}" in text
    assert "no local weights for ViT-L/14" in text
    lineage = _parse(text).tables["dataframe lineage"]
    nodes = [r[0] for r in lineage if r and r[0] != "node"]
    for name in ("preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate"):
        assert name in nodes
    ev = read_json(a / "evaluate" / "manifest.json")
    assert ev["inputs"]["avatar"][:10] in text and ev["code_version"][:12] in text


def test_lineage_rows_order_and_digests(runs):
    a, _ = runs
    rows = lineage_rows(a)
    assert [r["node"] for r in rows] == ["preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate"]
    t1 = read_json(a / "temporal" / "round_1" / "manifest.json")
    row = rows[3]
    assert f"avatar:{t1['outputs']['avatar'][:10]}" in row["outputs"]
    assert row["folder"] == "temporal/round_1"
    assert "final_loss=" in row["metrics"]


def test_report_cli_and_errors(runs, tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", *map(str, runs), "--out", str(out), "--title", "smoke comparison"]) == 0
    assert "smoke comparison" in out.read_text(encoding="utf-8")
    assert "self-contained" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        build_report([tmp_path / "nope"], tmp_path / "x.html")


@pytest.mark.browser
def test_report_renders_in_chromium(report, runs, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (CI installs it with `apt-get install -y chromium`)")
    from PIL import Image

    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
    ]  # fmt: skip
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={shot}", "--window-size=1280,900", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 5.0, "the screenshot is blank"
    dom = subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
        check=True, capture_output=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    _check_metrics_rows(dom, runs[0])
