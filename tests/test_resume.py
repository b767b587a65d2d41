"""A round killed with SIGKILL mid-way resumes from its last checkpoint, and ends where an
uninterrupted run with the same seeds ends.

The round runs as ``zero1toa node round spatial_1 ...`` in a subprocess (what a DVC stage or a
Prefect task runs), is killed as soon as its first mid-round checkpoint
(``<round>/.work/checkpoint.pt``) is on disk, and is then started again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from pipeline_fixtures import SMOKE, VENV_BIN  # the orchestration fixture comes from conftest

from zero1toa.env import apply_defaults

apply_defaults()

ITERATIONS = 60
#: Measured: the resumed and the uninterrupted avatars are bit-identical on CPU (max |diff| 0.0)
#: and the dataset versions have the same digest; the tolerance leaves room for other BLAS builds.
TOLERANCE = 1e-5


def _overrides(root, name):
    return SMOKE + [
        f"run.root={root}",
        f"run.name={name}",
        "stages.temporal.rounds=0",
        f"stages.spatial_iterations={ITERATIONS}",
        "train.checkpoint_every=10",
    ]


@pytest.fixture(scope="module")
def prepared(orchestration, tmp_path_factory):
    """preprocess + fit_head of the sample, for the killed run and for the reference run."""
    from flows.config import compose
    from tasks import keys
    from tasks.execute import run_node
    from zero1toa.sample import write_sample_portrait

    root = tmp_path_factory.mktemp("resume")
    cfg = compose(_overrides(root, "killed"))
    run = root / "killed"
    image = write_sample_portrait(root / "portrait.png")
    pre = run_node("preprocess", run, cfg, {}, image=image)
    run_node("fit_head", run, cfg, {"preprocess": pre["output_digest"]})
    ref = root / "reference"
    for sub in ("preprocess", "head"):
        shutil.copytree(run / sub, ref / sub)
    assert keys.upstream_from_disk(cfg, run, "spatial_1") == keys.upstream_from_disk(cfg, ref, "spatial_1")
    return root


def _node_cmd(root, name):
    return [str(VENV_BIN / "zero1toa"), "node", "round", "spatial_1", *_overrides(root, name)]


@pytest.fixture(scope="module")
def resumed(prepared, orchestration):
    """The round killed with SIGKILL after its first checkpoint, then run again to the end."""
    root = prepared
    round_dir = root / "killed" / "spatial" / "round_1"
    ckpt = round_dir / ".work" / "checkpoint.pt"
    proc = subprocess.Popen(_node_cmd(root, "killed"), env=orchestration.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the round ended before its first checkpoint:\n{proc.stdout.read()[-2000:]}"
    assert ckpt.exists(), "no checkpoint within 300 s"
    os.kill(proc.pid, signal.SIGKILL)  # kill -9: no cleanup, no atexit
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (round_dir / "manifest.json").exists() and not (round_dir / "avatar").exists()

    again = subprocess.run(_node_cmd(root, "killed"), env=orchestration.env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    return root, again


def test_killed_round_resumes_from_its_checkpoint(resumed):
    root, again = resumed
    round_dir = root / "killed" / "spatial" / "round_1"
    assert "resumed from iteration" in again.stdout
    man = json.loads((round_dir / "manifest.json").read_text())
    resumed = man["metrics"]["resumed_from_iteration"]
    assert resumed > 0 and resumed % 10 == 0 and resumed < ITERATIONS
    assert man["extra"]["losses"][-1]["step"] == ITERATIONS  # the round finished all its iterations
    steps = [row["step"] for row in man["extra"]["losses"]]
    assert steps == sorted(set(steps))  # the loss history continues, without a gap or a restart
    assert not (round_dir / ".work").exists()  # the work folder is gone once the round is done


def test_resumed_round_matches_an_uninterrupted_run(resumed):
    import torch

    from flows.config import compose
    from zero1toa import nodes
    from zero1toa.avatar.checkpoint import load_avatar

    root, _ = resumed
    cfg = compose(_overrides(root, "reference"))
    ref_man = nodes.node_round(root / "reference", cfg, "spatial_1")
    killed_man = json.loads((root / "killed" / "spatial" / "round_1" / "manifest.json").read_text())
    assert ref_man["metrics"]["resumed_from_iteration"] == 0
    g_ref, _, _ = load_avatar(root / "reference" / "spatial" / "round_1" / "avatar")
    g_res, _, _ = load_avatar(root / "killed" / "spatial" / "round_1" / "avatar")
    assert g_ref.num_gaussians == g_res.num_gaussians
    diffs = {k: float((g_ref.params[k].detach().float() - g_res.params[k].detach().float()).abs().max()) for k in g_ref.params if k != "binding" and g_ref.params[k].numel()}
    assert torch.equal(g_ref.params["binding"], g_res.params["binding"])
    print(f"resumed vs uninterrupted, max |diff| per parameter: {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs
    # the same pseudo ground truth: identical dataset versions
    assert killed_man["outputs"]["dataset"] == ref_man["outputs"]["dataset"]
    assert abs(killed_man["metrics"]["final_loss"] - ref_man["metrics"]["final_loss"]) <= 1e-4
