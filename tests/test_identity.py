"""NodeIdentity: one decision of what makes a node's result reusable, used by every launcher."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_fixtures import PROJECT, SMOKE

from zero1toa import identity as I
from zero1toa.env import apply_defaults

apply_defaults()

KINDS = ("preprocess", "fit_head", "round", "evaluate", "export")


def _rel(kind: str) -> set[str]:
    return {f.relative_to(I.SOURCE_ROOT).as_posix() for f in I.code_files(kind)}


def test_code_files_follow_imports_and_name_data_files():
    files = {k: _rel(k) for k in KINDS}
    cpp = "zero1toa/render/csrc/tile_compositor.cpp"
    topo = "zero1toa/data/facemesh_topology.json"
    assert {k for k in KINDS if cpp in files[k]} == {"round", "evaluate"}  # the rasterizer loads it
    assert {k for k in KINDS if topo in files[k]} == {"fit_head", "round", "evaluate", "export"}
    # what the old hand-kept lists missed: utils for rounds, the preprocess code rounds import
    assert "zero1toa/utils/io.py" in files["round"] and "zero1toa/symgen/round.py" in files["round"]
    assert "zero1toa/symgen/round.py" not in files["preprocess"] | files["fit_head"] | files["export"]
    assert "zero1toa/evaluate/run.py" in files["evaluate"] and "zero1toa/evaluate/run.py" not in files["round"]


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the zero1toa package the identity module reads instead of the real one."""
    root = tmp_path / "src"
    shutil.copytree(I.PACKAGE_ROOT, root / "zero1toa", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    monkeypatch.setattr(I, "SOURCE_ROOT", root)
    monkeypatch.setattr(I, "PACKAGE_ROOT", root / "zero1toa")
    return root / "zero1toa"


def _edit(path: Path, text: str) -> None:
    time.sleep(0.01)  # a new mtime even on coarse clocks
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize(
    "rel, text, changed",
    [
        ("render/csrc/tile_compositor.cpp", "\n// edited\n", {"round", "evaluate"}),
        ("data/facemesh_topology.json", " ", {"fit_head", "round", "evaluate", "export"}),
        ("evaluate/visuals.py", "\n# edited\n", {"evaluate"}),
        ("preprocess/mask.py", "\n# edited\n", {"preprocess", "fit_head", "round", "evaluate"}),
        ("utils/io.py", "\n# edited\n", set(KINDS)),
    ],
)
def test_editing_a_file_changes_exactly_the_nodes_that_use_it(package_copy, rel, text, changed):
    before = {k: I.code_digest(k) for k in KINDS}
    _edit(package_copy / rel, text)  # same process: no cache may hide the edit
    after = {k: I.code_digest(k) for k in KINDS}
    assert {k for k in KINDS if before[k] != after[k]} == changed


def test_file_digests_are_cached_by_stat_and_see_edits(tmp_path):
    d = I.FileDigests()
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    first = d.file(f)
    time.sleep(0.01)
    f.write_bytes(b"b" * 100)  # same size, new mtime
    assert d.file(f) != first
    cache = tmp_path / "cache.json"
    d.save(cache)
    e = I.FileDigests()
    e.load(cache)
    opened = []
    real_open = open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    import builtins

    builtins.open, saved = spy, builtins.open
    try:
        assert e.file(f) == d.file(f)  # from the persisted cache: the file is not read again
    finally:
        builtins.open = saved
    assert str(f) not in opened


def _cfg(tmp_path, *extra):
    from flows.config import compose

    return compose(SMOKE + [f"run.root={tmp_path}", "run.name=x", *extra])


def _upstream(cfg, node):
    from zero1toa.dag import upstream_nodes

    return {u: "0" * 64 for u in upstream_nodes(cfg, node)}


def test_identity_names_what_changed(tmp_path):
    cfg = _cfg(tmp_path)
    a = I.node_identity(cfg, "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    b = I.node_identity(_cfg(tmp_path, "train.optim.means=0.01", "generator.supersample=2"), "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    assert a.digest != b.digest
    assert b.changes(a.record()) == ["params.generator.supersample", "params.train.optim.means"]
    assert a.changes(a.record()) == []
    assert a.changes(None) == ["(no identity recorded)"]
    # an evaluation setting is not part of a round's identity
    c = I.node_identity(_cfg(tmp_path, "evaluate.resolution=96"), "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    assert c.digest == a.digest


def test_external_file_contents_enter_the_identity(tmp_path):
    weights = tmp_path / "lpips.safetensors"
    weights.write_bytes(b"first")
    extra = ("train.loss.lpips=0.1", f"train.loss.lpips_weights={weights}")
    cfg = _cfg(tmp_path, *extra)
    r1 = I.node_identity(cfg, "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    e1 = I.node_identity(cfg, "evaluate", tmp_path / "x", _upstream(cfg, "evaluate"))
    time.sleep(0.01)
    weights.write_bytes(b"other")  # same path, same size, other contents
    r2 = I.node_identity(cfg, "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    e2 = I.node_identity(cfg, "evaluate", tmp_path / "x", _upstream(cfg, "evaluate"))
    assert r2.changes(r1.record()) == ["external.train.loss.lpips_weights"]
    assert e1.digest == e2.digest
    # the file only counts while the setting is in effect
    off = _cfg(tmp_path, "train.loss.lpips=0", f"train.loss.lpips_weights={weights}")
    assert "train.loss.lpips_weights" not in I.external_inputs(__import__("zero1toa.config", fromlist=["to_dict"]).to_dict(off), "round")


def test_library_versions_enter_the_identity(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    a = I.node_identity(cfg, "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    real = I.metadata.version
    monkeypatch.setattr(I.metadata, "version", lambda d: "99.0" if d == "diffusers" else real(d))
    b = I.node_identity(cfg, "spatial_1", tmp_path / "x", _upstream(cfg, "spatial_1"))
    c = I.node_identity(cfg, "preprocess", tmp_path / "x", {}, image_digest="f" * 64)
    assert b.changes(a.record()) == ["library.diffusers"]
    assert "diffusers" not in c.libraries  # preprocessing does not run diffusers


def test_identity_module_imports_no_torch():
    code = "import sys, zero1toa.identity as i; i.environment_identity({}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_fit_head_is_bit_reproducible(tmp_path):
    """Same photo and settings, two folders: identical bytes (MKL's lstsq once differed in the 12th digit)."""
    from flows.config import compose
    from zero1toa.nodes import node_fit_head, node_preprocess
    from zero1toa.sample import write_sample_portrait
    from zero1toa.utils.manifest import digest_path

    image = write_sample_portrait(tmp_path / "p.png")
    digests = []
    for name in ("a", "b"):
        cfg = compose(SMOKE + [f"run.root={tmp_path}", f"run.name={name}"])
        node_preprocess(image, tmp_path / name, cfg)
        m = node_fit_head(tmp_path / name, cfg)
        digests.append((digest_path(tmp_path / name / "preprocess"), m["outputs"]))
    assert digests[0] == digests[1]


def test_cpp_kernel_is_keyed_by_sources_and_flags_not_by_path(tmp_path, monkeypatch):
    from zero1toa.render import cpu_rasterizer as R

    if not R.cpp_kernel_available():
        pytest.skip(f"no C++ kernel here: {R.cpp_kernel_error()}")
    flags = R._ext_state["flags"]
    tag = R._build_tag(flags, ["-fopenmp"])
    src = tmp_path / "csrc"
    shutil.copytree(R._CSRC_DIR, src)
    monkeypatch.setattr(R, "_CSRC_DIR", src)
    assert R._build_tag(flags, ["-fopenmp"]) == tag
    _edit(src / "projection.cpp", "\n// edited\n")
    assert R._build_tag(flags, ["-fopenmp"]) != tag  # an edited source builds anew
    # another PATH (another ninja) loads the built library without building or calling ninja
    code = (
        "import torch.utils.cpp_extension as c\n"
        "def refuse(*a, **k): raise RuntimeError('would rebuild')\n"
        "c.load = refuse\n"
        "from zero1toa.render.cpu_rasterizer import cpp_kernel_available, cpp_kernel_error\n"
        "print(cpp_kernel_available(), cpp_kernel_error())"
    )
    env = {k: v for k, v in os.environ.items()}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert out.stdout.strip() == "True None", out.stdout + out.stderr


def test_batch_resolves_paths_before_they_reach_workers(tmp_path, monkeypatch):
    from flows.batch import portrait_configs
    from flows.config import compose

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    (tmp_path / "me.png").write_bytes(b"a photo")  # read for its digest (which folder it runs in)
    base = compose(["run.root=relative_runs", "train.loss.lpips=0.1", "train.loss.lpips_weights=w.safetensors", "stages.temporal.sequences=[seq.csv]"])
    cfg = portrait_configs([tmp_path / "me.png"], base)[0]
    assert cfg["run"]["root"] == str(tmp_path / "relative_runs")
    assert cfg["train"]["loss"]["lpips_weights"] == str(tmp_path / "w.safetensors")
    assert cfg["stages"]["temporal"]["sequences"] == [str(tmp_path / "seq.csv")]


def test_a_stale_params_identity_stops_a_dvc_stage_with_the_fix(tmp_path):
    import yaml

    from flows.commands.node import check_params_identity
    from flows.commands.params import compose_params
    from flows.config import compose
    from zero1toa.config import ConfigError

    data = compose_params(["preset=smoke"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = compose(["preset=smoke"])
    check_params_identity(path, cfg, "round")  # composed here and now: accepted
    data["identity"]["round"]["libraries"]["torch"] = "0.0.1"
    path.write_text(yaml.safe_dump(data))
    check_params_identity(path, cfg, "preprocess")  # another node's entry: not its business
    with pytest.raises(ConfigError, match=r"libraries.torch changed.*zero1toa params"):
        check_params_identity(path, cfg, "round")


def test_commands_on_an_existing_run_keep_its_settings(tmp_path):
    from flows.config import compose
    from flows.runconfig import config_for_run, merge_overrides, save_run_config

    assert merge_overrides(["preset=smoke", "evaluate.resolution=64", "+x.y=1"], ["evaluate.resolution=96", "x.y=2"]) == ["preset=smoke", "evaluate.resolution=96", "x.y=2"]
    run = tmp_path / "smoke_run"
    saved = ["preset=smoke", "evaluate.video_frames=5"]
    save_run_config(run, compose(saved), saved)
    cfg, source = config_for_run(run, ["evaluate.resolution=96"])
    assert cfg.evaluate.video_frames == 5 and cfg.evaluate.resolution == 96
    assert cfg.evaluate.fps_repeats == compose(["preset=smoke"]).evaluate.fps_repeats != compose([]).evaluate.fps_repeats
    assert "preset=smoke" in source
    # a run composed from params.yaml (DVC) records no overrides: dotted overrides apply to its config
    dvc_run = tmp_path / "dvc_run"
    save_run_config(dvc_run, compose(saved), None)
    cfg2, _ = config_for_run(dvc_run, ["evaluate.resolution=80"])
    assert cfg2.evaluate.video_frames == 5 and cfg2.evaluate.resolution == 80
    # no record: the defaults, and the line says so
    _, none_source = config_for_run(tmp_path / "bare", [])
    assert "defaults" in none_source
