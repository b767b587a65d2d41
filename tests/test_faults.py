"""The fault suite: a run survives kills, full disks, damaged files and a second run of its folder.

Every case runs the sample portrait's DAG (smoke preset with two spatial rounds, so a kill can
land in a round after the first; the default preset's schedule once) in its own run folder, injects one fault through
:mod:`zero1toa.faults` (SIGKILL at a named point of a subprocess, ``ENOSPC`` from a write, a
truncated file), runs again, and compares every node's output digests with an uninterrupted run
in another folder: they must be *equal*, bit for bit (the nodes are reproducible across folders).
A summary (faults injected, recovered, digests equal) is printed at the end of the module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_fixtures import PROJECT, SMOKE

from zero1toa.env import apply_defaults

apply_defaults()

#: Smoke with two spatial rounds (and no temporal one: the suite must stay quick) + checkpoints
#: every 5 iterations (kills between them resume).
OVERRIDES = SMOKE + [
    "stages.spatial.rounds=2",
    "stages.temporal.rounds=0",
    "train.checkpoint_every=5",
    "evaluate.identity_yaw_deg=[0.0]",
    "evaluate.identity_size=256",
]

DRIVER = """
import os, sys
from zero1toa.env import apply_defaults
apply_defaults()
from flows.config import compose
from zero1toa.nodes import run_all
run_all(sys.argv[1], compose(sys.argv[2:]), until=os.environ.get("ZERO1TOA_UNTIL") or None)
"""

SUMMARY: dict[str, dict] = {}


def _cfg(root: Path, name: str, extra: list[str] = ()):
    from flows.config import compose

    return compose(OVERRIDES + [f"run.root={root}", f"run.name={name}", *extra])


def _digests(manifests: dict) -> dict:
    return {node: man["outputs"] for node, man in manifests.items()}


def _env(**extra: str) -> dict:
    """This process's environment for the subprocess runs, with the same torch thread count."""
    import torch

    env = dict(os.environ)
    env.pop("ZERO1TOA_FAULT", None)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["PYTHONPATH"] = f"{PROJECT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update(extra)
    return env


def _run_killed(root: Path, name: str, image: Path, fault: str, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """The DAG in a subprocess with ``ZERO1TOA_FAULT=fault``; it must die by SIGKILL."""
    args = [sys.executable, "-c", DRIVER, str(image), *OVERRIDES, f"run.root={root}", f"run.name={name}", *extra]
    proc = subprocess.run(args, env=_env(ZERO1TOA_FAULT=fault), capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert proc.returncode == -signal.SIGKILL, f"fault {fault} was never reached (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted run: the digests every recovered run must reproduce."""
    from zero1toa.nodes import run_all
    from zero1toa.sample import write_sample_portrait

    root = tmp_path_factory.mktemp("faults")
    image = write_sample_portrait(root / "portrait.png")
    t0 = time.perf_counter()
    manifests = run_all(image, _cfg(root, "baseline"))
    return {"root": root, "image": image, "digests": _digests(manifests), "seconds": time.perf_counter() - t0}


def _recover(baseline, name: str, caplog, extra: list[str] = ()) -> tuple[dict, list[str], list[str]]:
    """Run again in-process; -> (manifests, nodes reused, nodes run)."""
    from zero1toa.nodes import run_all

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zero1toa"):
        manifests = run_all(baseline["image"], _cfg(baseline["root"], name, list(extra)))
    reused = [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().endswith(": up to date")]
    ran = [r.getMessage().split(":")[0] for r in caplog.records if ": running (" in r.getMessage()]
    return manifests, reused, ran


def _record(case: str, equal: bool | None, **info) -> None:
    SUMMARY[case] = {"recovered": True, "digests_equal": equal, **info}


# ----------------------------------------------------------------------------- SIGKILL

#: (fault point, nodes the re-run must reuse). Each mechanism (a node's finished manifest, a kill
#: in a round's training and after its dataset write, inside an atomic directory write and a
#: manifest write) runs in CI; the other points of the same mechanisms with ``scripts/test.sh --slow``.
_SLOW = pytest.mark.slow
KILLS = [
    pytest.param("kill:after:preprocess", ["preprocess"], marks=_SLOW),
    pytest.param("kill:after:fit_head", ["preprocess", "fit_head"], marks=_SLOW),
    ("kill:after:spatial_1", ["preprocess", "fit_head", "spatial_1"]),
    pytest.param("kill:after:spatial_2", ["preprocess", "fit_head", "spatial_1", "spatial_2"], marks=_SLOW),
    pytest.param("kill:after:evaluate", ["preprocess", "fit_head", "spatial_1", "spatial_2", "evaluate"], marks=_SLOW),
    # inside a round: generation (spatial_2's first clip: spatial_1 made two), training, dataset write
    pytest.param("kill:round:generate@3", ["preprocess", "fit_head", "spatial_1"], marks=_SLOW),
    ("kill:round:step@33", ["preprocess", "fit_head", "spatial_1"]),  # spatial_2, iteration 13 (checkpoint at 10)
    ("kill:dataset:written@2", ["preprocess", "fit_head", "spatial_1"]),
    # inside atomic writes: a file of the work folder, a checkpoint, an avatar folder, a manifest
    pytest.param("kill:write:initial.parquet@2", ["preprocess", "fit_head", "spatial_1"], marks=_SLOW),
    pytest.param("kill:write:checkpoint.pt@5", ["preprocess", "fit_head", "spatial_1"], marks=_SLOW),  # spatial_2's first (4 per round)
    ("kill:write:avatar/@2", ["preprocess", "fit_head", "spatial_1"]),
    ("kill:write:manifest.json@2", []),  # preprocess's manifest, while its identity is recorded
]


def _kill_id(case) -> str:
    fault = case.values[0] if hasattr(case, "values") else case[0]
    return fault.split(":", 1)[1]



@pytest.mark.parametrize("fault,reused", KILLS, ids=[_kill_id(k) for k in KILLS])
def test_killed_run_recovers_with_identical_outputs(baseline, caplog, fault, reused):
    name = "k_" + fault.split(":", 1)[1].replace(":", "_").replace("@", "_").replace("/", "").replace(".", "_")
    _run_killed(baseline["root"], name, baseline["image"], fault)
    manifests, was_reused, ran = _recover(baseline, name, caplog)
    assert was_reused == reused, f"reused {was_reused}, ran {ran}"
    equal = _digests(manifests) == baseline["digests"]
    assert equal, {n: (d, baseline["digests"][n]) for n, d in _digests(manifests).items() if d != baseline["digests"][n]}
    resumed = manifests["spatial_2"]["metrics"]["resumed_from_iteration"]
    if fault == "kill:round:step@33":
        assert resumed == 10  # the second round continued from its checkpoint, not from scratch
    _record(fault, equal, reused=len(was_reused), resumed_from=resumed)


def test_changed_settings_discard_a_killed_rounds_work(baseline, caplog):
    """Killed mid-round, re-run with another learning rate and generator setting: never resumed."""
    name = "stale"
    _run_killed(baseline["root"], name, baseline["image"], "kill:round:step@8")  # spatial_1, checkpoint at 5
    work = baseline["root"] / name / "spatial" / "round_1" / ".work"
    assert (work / "checkpoint.pt").exists() and (work / "initial.parquet").exists()
    changed = ["train.optim.means=0.0005", "train.loss.l1=0.5", "generator.supersample=2"]
    manifests, _, _ = _recover(baseline, name, caplog, changed)
    text = caplog.text
    assert "discarding its work folder" in text, text[-2000:]
    for key in ("params.train.optim.means", "params.train.loss.l1", "params.generator.supersample"):
        assert key in text, f"{key} not named in: {text[-2000:]}"
    assert manifests["spatial_1"]["metrics"]["resumed_from_iteration"] == 0
    _record("stale resume (settings changed)", None, restarted=True)  # other settings: no baseline to equal


#: The default preset's schedule, scaled down (resolution, clips, iterations), two spatial rounds.
DEFAULT_REDUCED = [
    "preset=default",
    "run.progress=false",
    "preprocess.resolution=256",
    "generator.resolution=64",
    "avatar.init.num_gaussians=2000",
    "train.densify.max_gaussians=4000",
    "stages.spatial.rounds=2",
    "stages.temporal.rounds=0",
    "stages.spatial.clips_per_round=2",
    "stages.spatial.frames_per_clip=4",
    "stages.spatial_iterations=40",
    "symgen.refresh_every=10",
    "train.checkpoint_every=10",
]


def test_default_schedule_killed_in_its_second_round_resumes(baseline, caplog):
    """Once, no run killed after its first round could ever resume; on the default preset's
    schedule (scaled down) a SIGKILL in spatial_2's training resumes from its checkpoint and
    ends with the uninterrupted run's dataset and avatar."""
    from flows.config import compose
    from zero1toa.nodes import run_all

    root = baseline["root"]

    def cfg(name):
        return compose(DEFAULT_REDUCED + [f"run.root={root}", f"run.name={name}"])

    reference = run_all(baseline["image"], cfg("default_ref"), until="spatial_2")
    args = [sys.executable, "-c", DRIVER, str(baseline["image"]), *DEFAULT_REDUCED, f"run.root={root}", "run.name=default_killed"]
    proc = subprocess.run(args, env=_env(ZERO1TOA_FAULT="kill:round:step@65", ZERO1TOA_UNTIL="spatial_2"), capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]  # spatial_2, iteration 25
    assert (root / "default_killed" / "spatial" / "round_2" / ".work" / "checkpoint.pt").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zero1toa"):
        resumed = run_all(baseline["image"], cfg("default_killed"), until="spatial_2")
    assert resumed["spatial_2"]["metrics"]["resumed_from_iteration"] == 20
    assert "spatial_1: up to date" in caplog.text
    assert _digests(resumed) == _digests(reference)
    _record("default schedule, killed in spatial_2", True, resumed_from=20)


# ----------------------------------------------------------------------------- concurrency


def test_one_run_per_folder_and_stale_locks_are_taken_over(baseline, caplog):
    from zero1toa.nodes import run_all
    from zero1toa.runlock import RunFolderBusy

    run_dir = baseline["root"] / "locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from zero1toa.runlock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(run_dir)],
        env=_env(), stdout=subprocess.PIPE, text=True, cwd=PROJECT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with pytest.raises(RunFolderBusy) as err:
            run_all(baseline["image"], _cfg(baseline["root"], "locked"))
        assert time.perf_counter() - t0 < 5  # at once, not after waiting
        assert f"pid {holder.pid}" in str(err.value) and "in use" in str(err.value)
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the kernel lock does not
        holder.wait()
    assert (run_dir / ".lock").exists()
    manifests, _, _ = _recover(baseline, "locked", caplog)
    assert _digests(manifests) == baseline["digests"]
    _record("concurrent run of one folder", True)


def test_different_folders_run_concurrently(baseline):
    """Two runs at once in two folders: neither disturbs the other; both equal the baseline."""
    procs = []
    for name in ("par_a", "par_b"):
        args = [sys.executable, "-c", DRIVER, str(baseline["image"]), *OVERRIDES, f"run.root={baseline['root']}", f"run.name={name}"]
        procs.append(subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=PROJECT))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    from zero1toa.runfolder import read_run_manifests

    for name in ("par_a", "par_b"):
        outputs = {node: m["outputs"] for node, m in read_run_manifests(baseline["root"] / name).items()}
        assert outputs == baseline["digests"]
    _record("two folders at once", True)


# ----------------------------------------------------------------------------- full disk


def test_disk_full_keeps_the_previous_state_and_resumes(baseline, caplog, monkeypatch, capsys):
    from flows.cli import report_error
    from zero1toa import faults
    from zero1toa.nodes import run_all

    name = "enospc"
    monkeypatch.setenv(faults.ENV, "enospc:write:checkpoint.pt@6")  # spatial_2's second checkpoint (4 per round)
    faults._hits.clear()
    with pytest.raises(OSError) as err:
        run_all(baseline["image"], _cfg(baseline["root"], name))
    monkeypatch.delenv(faults.ENV)
    run = baseline["root"] / name
    assert (run / "spatial" / "round_1" / "dataset" / "manifest.json").exists()  # the previous version is intact
    assert (run / "spatial" / "round_2" / ".work" / "checkpoint.pt").exists()  # and the last good checkpoint
    assert report_error("run", ["run", "sample"], err.value) == 1
    message = capsys.readouterr().err
    assert "the disk is full" in message and "resumes" in message and message.count("\n") <= 1
    manifests, reused, _ = _recover(baseline, name, caplog)
    assert reused == ["preprocess", "fit_head", "spatial_1"]
    resumed = manifests["spatial_2"]["metrics"]["resumed_from_iteration"]
    assert resumed > 0 and resumed % 5 == 0  # from the checkpoint before the one the full disk refused
    assert _digests(manifests) == baseline["digests"]
    _record("ENOSPC in a checkpoint write", True)


def test_disk_full_in_a_dataset_write(baseline, caplog, monkeypatch):
    from zero1toa import faults
    from zero1toa.nodes import run_all

    name = "enospc_data"
    monkeypatch.setenv(faults.ENV, "enospc:dataset:written@2")
    faults._hits.clear()
    with pytest.raises(OSError):
        run_all(baseline["image"], _cfg(baseline["root"], name))
    monkeypatch.delenv(faults.ENV)
    run = baseline["root"] / name
    assert not (run / "spatial" / "round_2" / "dataset").exists()
    assert not list((run / "spatial" / "round_2").glob(".dataset.*"))  # no half-written folder left
    manifests, _, _ = _recover(baseline, name, caplog)
    assert _digests(manifests) == baseline["digests"]
    _record("ENOSPC in a dataset write", True)


# ----------------------------------------------------------------------------- damaged files


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # in place: every hard link sees it


def test_damaged_files_are_detected_and_their_nodes_rerun(baseline, caplog):
    """A truncated shared frame, parquet, avatar file and .ply: regenerated, never re-read."""
    from zero1toa.nodes import run_all

    name = "damaged"
    run_all(baseline["image"], _cfg(baseline["root"], name))
    run = baseline["root"] / name
    s1 = run / "spatial" / "round_1" / "dataset"
    s2_frames = {p.name for p in (run / "spatial" / "round_2" / "dataset" / "frames").glob("*.png")}
    shared = sorted(p for p in (s1 / "frames").glob("*.png") if p.name in s2_frames)
    assert shared, "spatial_2 carries spatial_1's frames (hard links into objects/)"
    _truncate(shared[0])  # one object, three versions that link it
    _truncate(run / "spatial" / "round_2" / "dataset" / "samples.parquet")
    _truncate(run / "spatial" / "round_2" / "avatar" / "gaussians.safetensors")
    _truncate(next((run / "export").glob("*.ply")))
    manifests, reused, ran = _recover(baseline, name, caplog)
    # the damaged nodes re-run and reproduce their bytes, so the evaluation (intact) stays valid
    assert reused == ["preprocess", "fit_head", "evaluate"]
    assert ran == ["spatial_1", "spatial_2", "export"]
    assert "changed on disk" in caplog.text
    assert _digests(manifests) == baseline["digests"]
    _, reused_again, ran_again = _recover(baseline, name, caplog)
    assert ran_again == [] and len(reused_again) == 6  # repaired for good: nothing re-read corrupt
    _record("truncated frame, parquet, safetensors, ply", True, rerun=ran)


def test_unreadable_checkpoint_restarts_the_round(baseline, caplog):
    name = "bad_ckpt"
    _run_killed(baseline["root"], name, baseline["image"], "kill:round:step@8")
    ckpt = baseline["root"] / name / "spatial" / "round_1" / ".work" / "checkpoint.pt"
    _truncate(ckpt, 0.3)
    manifests, _, _ = _recover(baseline, name, caplog)
    assert "discarding an unreadable checkpoint" in caplog.text
    assert manifests["spatial_1"]["metrics"]["resumed_from_iteration"] == 0
    assert _digests(manifests) == baseline["digests"]
    _record("truncated checkpoint", True)


def test_a_round_refuses_a_corrupt_upstream_frame_with_a_clear_error(baseline):
    """Run on its own (`zero1toa node spatial_2`), a round names the damaged upstream node."""
    from zero1toa.nodes import CorruptArtifactError, node_round

    name = "corrupt_upstream"
    cfg = _cfg(baseline["root"], name)
    from zero1toa.nodes import run_all

    run_all(baseline["image"], cfg)
    run = baseline["root"] / name
    frame = sorted((run / "spatial" / "round_1" / "dataset" / "frames").glob("*.png"))[0]
    _truncate(frame)
    with pytest.raises(CorruptArtifactError, match="Re-run spatial_1"):
        node_round(run, cfg, "spatial_2")


def test_foreign_files_get_a_clear_error(tmp_path, capsys):
    from flows.cli import main

    junk = tmp_path / "not_an_avatar"
    junk.mkdir()
    (junk / "avatar.json").write_text("{ this is not json")
    (junk / "gaussians.safetensors").write_bytes(b"\x80\x04pickle?")
    for argv in (["export", str(junk), "--out", str(tmp_path / "x.ply")], ["animate", str(junk), "--drive", "smile", "--out", str(tmp_path / "x.mp4")], ["evaluate", str(tmp_path / "nowhere")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"zero1toa {argv[0]}: error:") and "\n" not in err, err
        assert "Traceback" not in err


def test_fault_summary(baseline):
    """Prints the suite's figures (the README quotes them)."""
    n = len(SUMMARY)
    compared = [v["digests_equal"] for v in SUMMARY.values() if v["digests_equal"] is not None]
    print(
        f"\nfault suite: {n} faults injected, {sum(v['recovered'] for v in SUMMARY.values())} recovered, "
        f"{sum(compared)} of {len(compared)} compared with an uninterrupted run have equal output digests "
        f"(uninterrupted run {baseline['seconds']:.1f} s)"
    )
    for case, info in SUMMARY.items():
        print(f"  {case}: {json.dumps(info)}")
    if n:
        assert all(v["recovered"] for v in SUMMARY.values()) and all(compared)
    shutil.rmtree(baseline["root"] / "par_a", ignore_errors=True)
