"""The portrait flow end to end (smoke preset): caching, targeted re-runs, failures, retries, bad config.

The tests share one run folder (``smoke_run``) and are written in the order a user would go:
run, re-run, change an evaluation setting, change a temporal setting, delete an artifact, hit a
failing node, hit a transient failure.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from pipeline_fixtures import run_cli  # orchestration and smoke_run come from conftest

from zero1toa.env import apply_defaults

apply_defaults()

ALL_NODES = ["preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate", "export"]


def _run(overrides, **kw):
    from flows.config import compose
    from flows.flow import run_portrait

    return run_portrait("sample", compose(overrides), **kw)


def _api(orch, path: str, body: dict) -> list:
    req = urllib.request.Request(f"{orch.api_url}{path}", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_full_flow_runs_every_node_and_reports_outputs(smoke_run):
    s = smoke_run.first
    assert list(s["nodes"]) == ALL_NODES
    assert s["executed"] == ALL_NODES and s["cached"] == []
    out = s["outputs"]
    assert [Path(p).name for p in out["avatar"]] == ["avatar_neutral.ply"]
    assert {Path(p).name for p in out["videos"]} == {"turntable.mp4", "expressions.mp4"}
    assert all(Path(p).stat().st_size > 0 for p in out["avatar"] + out["videos"])
    metrics = json.loads(Path(out["metrics"]).read_text())
    assert metrics["num_gaussians"] > 0
    # every node left its manifest, and its result record matches it
    from zero1toa.runfolder import read_run_manifests

    manifests = read_run_manifests(smoke_run.run_dir)
    assert set(manifests) == set(ALL_NODES)
    from tasks.keys import output_digest

    for node in ALL_NODES:
        assert s["nodes"][node]["output_digest"] == output_digest(manifests[node])


def test_second_run_executes_no_node(smoke_run):
    s = _run(smoke_run.overrides)
    assert s["executed"] == []
    assert s["cached"] == ALL_NODES
    # same artifacts as the first run
    assert {n: v["output_digest"] for n, v in s["nodes"].items()} == {n: v["output_digest"] for n, v in smoke_run.first["nodes"].items()}


def test_a_photo_runs_in_its_own_folder_and_a_rerun_reuses_its_cache(smoke_run, tmp_path):
    """``run PHOTO`` without run.name: the folder is the photo's stem. A file named like the
    smoke run holding the same bytes finds that folder and its cache (nothing executes); a
    different photo of the same name never reuses it."""
    import numpy as np
    from PIL import Image

    from flows.config import compose
    from flows.flow import name_run_for_photo, run_portrait
    from zero1toa.runfolder import INPUT_RECORD

    overrides = [o for o in smoke_run.overrides if not o.startswith("run.name=")]
    from tasks.keys import image_digest

    assert json.loads((smoke_run.run_dir / INPUT_RECORD).read_text())["sha256"] == image_digest(smoke_run.run_dir / "input.png")
    same = tmp_path / "same" / "smoke.png"
    same.parent.mkdir()
    shutil.copyfile(smoke_run.run_dir / "input.png", same)
    s = run_portrait(same, compose(overrides), overrides=overrides)
    assert Path(s["run_dir"]) == smoke_run.run_dir and s["run_name"] == "smoke"
    assert s["executed"] == [] and s["cached"] == ALL_NODES
    assert "run_folder_note" not in s

    other = tmp_path / "other" / "smoke.png"
    other.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(same))[:, ::-1])).save(other)
    cfg, note = name_run_for_photo(other, other, compose(overrides), overrides)
    assert cfg.run.name == f"smoke-{image_digest(other)[:8]}" and cfg.run.root == smoke_run.cfg.run.root
    assert note and str(smoke_run.run_dir) in note and "another photo" in note
    # an explicit run.name wins; the bundled portrait keeps its own name
    assert name_run_for_photo(other, other, compose(overrides + ["run.name=mine"]), overrides + ["run.name=mine"])[0].run.name == "mine"
    assert name_run_for_photo("sample", smoke_run.run_dir / "input.png", compose(overrides), overrides)[0].run.name == "sample"


def test_runs_show_on_the_prefect_server_with_states_durations_logs(smoke_run, orchestration):
    # The dashboard test needs the session's Prefect server; without one this is a failure, not a skip.
    assert orchestration.api_url is not None, orchestration.server_problem
    flow_run_id = smoke_run.first["flow_run_id"]
    runs = _api(orchestration, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 50})
    by_name = {r["name"]: r for r in runs}
    assert set(ALL_NODES) <= set(by_name)
    assert all(by_name[n]["state"]["type"] == "COMPLETED" for n in ALL_NODES)
    assert by_name["spatial_1"]["total_run_time"] > 0
    logs = _api(orchestration, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    assert any("spatial_1 done" in entry["message"] for entry in logs), [entry["message"] for entry in logs][:10]


def test_changing_an_evaluation_setting_reruns_only_evaluation(smoke_run):
    changed = _run(smoke_run.overrides + ["evaluate.video_fps=12"])
    assert changed["executed"] == ["evaluate"]
    # back to the original setting: its cached evaluation no longer matches the files on disk
    # (the evaluate folder now holds the other evaluation), so evaluate runs again, alone
    back = _run(smoke_run.overrides)
    assert back["executed"] == ["evaluate"]
    assert back["nodes"]["evaluate"]["output_digest"] != changed["nodes"]["evaluate"]["output_digest"]


def test_changing_a_temporal_setting_reruns_temporal_rounds_and_what_follows(smoke_run):
    s = _run(smoke_run.overrides + ["stages.temporal_iterations=10"])
    assert s["executed"] == ["temporal_1", "evaluate", "export"]
    assert s["cached"] == ["preprocess", "fit_head", "spatial_1"]
    assert s["nodes"]["temporal_1"]["output_digest"] != smoke_run.first["nodes"]["temporal_1"]["output_digest"]
    # back to the original setting: the cached results' files were replaced by the changed run's,
    # so those nodes run again, and (every node being reproducible) give the original bytes
    back = _run(smoke_run.overrides)
    assert back["executed"] == ["temporal_1", "evaluate", "export"]
    for node in ("temporal_1", "evaluate", "export"):
        assert back["nodes"][node]["output_digest"] == smoke_run.first["nodes"][node]["output_digest"], node


def test_deleted_artifact_makes_its_node_run_again(smoke_run):
    shutil.rmtree(smoke_run.run_dir / "export")
    s = _run(smoke_run.overrides)
    assert s["executed"] == ["export"]
    assert (smoke_run.run_dir / "export" / "avatar_neutral.ply").exists()


def test_failed_node_leaves_earlier_nodes_cached(smoke_run, monkeypatch):
    from zero1toa import nodes

    real = nodes.node_evaluate

    def broken(run_dir, cfg):
        raise ValueError("evaluation exploded (test)")

    monkeypatch.setattr(nodes, "node_evaluate", broken)
    with pytest.raises(ValueError, match="evaluation exploded"):
        _run(smoke_run.overrides + ["evaluate.video_fps=10"])
    monkeypatch.setattr(nodes, "node_evaluate", real)
    s = _run(smoke_run.overrides + ["evaluate.video_fps=10"])
    assert s["executed"] == ["evaluate"]  # everything before it came from the cache

    from tasks import tracking as tr

    c = tr.client()
    exp = c.get_experiment_by_name(tr.experiment_name("smoke"))
    failed = c.search_runs([exp.experiment_id], filter_string="attributes.status = 'FAILED'")
    assert any(r.data.tags.get("zero1toa.node") == "evaluate" and "exploded" in r.data.tags.get("zero1toa.error", "") for r in failed)
    assert any(r.data.tags.get("zero1toa.parent") == "true" for r in failed)  # the pipeline run failed too
    _run(smoke_run.overrides)  # restore


def test_transient_failure_is_retried(smoke_run, monkeypatch):
    from zero1toa import nodes

    real = nodes.node_export
    calls = []

    def flaky(run_dir, cfg):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("storage hiccup (test)")
        return real(run_dir, cfg)

    monkeypatch.setattr(nodes, "node_export", flaky)
    shutil.rmtree(smoke_run.run_dir / "export")
    s = _run(smoke_run.overrides, retries=1, retry_delays=[0.1])
    assert len(calls) == 2
    assert s["executed"] == ["export"]


def test_non_transient_failure_is_not_retried(smoke_run, monkeypatch):
    from tasks.execute import is_transient
    from zero1toa import nodes
    from zero1toa.config import ConfigError

    assert is_transient(OSError("disk")) and is_transient(TimeoutError()) and is_transient(RuntimeError("CUDA out of memory"))
    assert not is_transient(ConfigError("bad")) and not is_transient(FileNotFoundError("x")) and not is_transient(ValueError("x"))
    calls = []

    def bad_input(run_dir, cfg):
        calls.append(1)
        raise ValueError("a bad setting (test)")

    monkeypatch.setattr(nodes, "node_export", bad_input)
    shutil.rmtree(smoke_run.run_dir / "export")
    with pytest.raises(ValueError, match="bad setting"):
        _run(smoke_run.overrides, retries=2, retry_delays=[0.1, 0.1])
    assert len(calls) == 1  # failed at once: two retries were allowed, none was spent
    monkeypatch.undo()
    assert _run(smoke_run.overrides)["executed"] == ["export"]  # restore the shared run folder


@pytest.mark.parametrize(
    "override, named",
    [("train.optim.lrr=1", "train.optim.lrr"), ("+train.optim.lrr=1", "train.optim.lrr"), ("train.optim.means=fast", "train.optim.means")],
)
def test_bad_config_fails_before_any_work_naming_the_key(orchestration, tmp_path, override, named):
    root = tmp_path / "runs"
    r = run_cli(["run", "sample", "preset=smoke", f"run.root={root}", override], orchestration, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert named in r.stderr
    assert not root.exists()  # no run folder, no input image, no flow


def test_missing_portrait_fails_before_the_flow(orchestration, tmp_path):
    r = run_cli(["run", str(tmp_path / "nope.jpg"), "preset=smoke", f"run.root={tmp_path}"], orchestration, timeout=120)
    assert r.returncode == 1 and "portrait not found" in r.stderr


def test_a_file_that_is_not_a_photo_is_one_clear_line(orchestration, tmp_path):
    """Checked before the flow starts: no Prefect run, no traceback; the traceback goes to a log."""
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    r = run_cli(["run", str(text), "preset=smoke", f"run.root={tmp_path}"], orchestration, timeout=120, ZERO1TOA_HOME=str(tmp_path))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("zero1toa run: error:") and "not an image" in lines[0] and "Traceback" not in r.stderr
    log = tmp_path / ".logs" / "last_error.log"
    assert str(log) in lines[0] and "Traceback" in log.read_text()
    assert not (tmp_path / "sample").exists()  # nothing was started
    debug = run_cli(["--debug", "run", str(text), "preset=smoke", f"run.root={tmp_path}"], orchestration, timeout=120, ZERO1TOA_HOME=str(tmp_path))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_second_run_of_a_busy_folder_fails_at_once_naming_the_holder(orchestration, tmp_path):
    import subprocess
    import sys

    from pipeline_fixtures import PROJECT

    run_dir = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from zero1toa.runlock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli(["run", "sample", "preset=smoke", f"run.root={tmp_path}", "run.name=busy"], orchestration, timeout=180)
        assert r.returncode == 1 and f"in use by pid {holder.pid}" in r.stderr, r.stderr[-2000:]
    finally:
        holder.kill()
        holder.wait()


def test_folder_for_photo_never_reuses_another_photos_folder(tmp_path):
    """The naming rule alone (no flow): stem, same photo -> same folder, other photo -> stem-digest."""
    from zero1toa.runfolder import folder_for_photo, record_input, recorded_input_digest, run_name_for

    assert run_name_for("/x/My photo (1).final.JPG") == "My_photo_1_final"
    assert run_name_for("/x/..jpg") == "portrait"
    a, b = "a" * 64, "b" * 64
    assert folder_for_photo(tmp_path, "me", a) == ("me", None)  # no folder yet
    (tmp_path / "me").mkdir()
    assert folder_for_photo(tmp_path, "me", a) == ("me", None)  # a folder with no record is free
    record_input(tmp_path / "me", Path("me.jpg"), a)
    assert folder_for_photo(tmp_path, "me", a) == ("me", None)  # the same photo: its own folder
    name, note = folder_for_photo(tmp_path, "me", b)
    assert name == "me-bbbbbbbb" and "holds another photo" in note
    record_input(tmp_path / name, Path("me.jpg"), b)
    assert folder_for_photo(tmp_path, "me", b)[0] == "me-bbbbbbbb"  # and the second photo keeps its folder
    assert folder_for_photo(tmp_path, "me", "c" * 64)[0] == "me-cccccccc"  # a third photo: its own suffix
    with pytest.raises(ValueError, match="run.name=NAME"):  # only a clash of the 8-digit prefix is left to the user
        folder_for_photo(tmp_path, "me", "b" * 8 + "d" * 56)
    # folders made before input.json existed are known by their preprocess manifest
    (tmp_path / "old" / "preprocess").mkdir(parents=True)
    (tmp_path / "old" / "preprocess" / "manifest.json").write_text(json.dumps({"node": "preprocess", "inputs": {"image": a}}))
    assert recorded_input_digest(tmp_path / "old") == a
    assert folder_for_photo(tmp_path, "old", b)[0] == "old-bbbbbbbb"
