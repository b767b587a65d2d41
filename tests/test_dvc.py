"""The DAG as DVC stages: repro, no-op repro, experiments with Hydra overrides, push/pull, plots.

Everything runs in a throw-away git + DVC repository built from the project's dvc.yaml, .dvc/
(config, Hydra composition), conf/ and zero1toa/ (the code the stages depend on), with the
smoke preset; `dvc exp run` stashes and commits, so it must never run in the real checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_fixtures import PROJECT, SMOKE, VENV_BIN, run_cli  # the orchestration fixture comes from conftest

from zero1toa.env import apply_defaults

apply_defaults()

NODES = ["preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate", "export"]
GIT_ID = {"GIT_AUTHOR_NAME": "zero1toa tests", "GIT_AUTHOR_EMAIL": "tests@zero1toa.invalid", "GIT_COMMITTER_NAME": "zero1toa tests", "GIT_COMMITTER_EMAIL": "tests@zero1toa.invalid"}


def _copy_project(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.o")
    dst.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(PROJECT / name, dst / name)
    shutil.copytree(PROJECT / "conf", dst / "conf", ignore=ignore)
    shutil.copytree(PROJECT / "zero1toa", dst / "zero1toa", ignore=ignore)
    (dst / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy2(PROJECT / ".dvc" / name, dst / ".dvc" / name)
    shutil.copytree(PROJECT / ".dvc" / "hydra", dst / ".dvc" / "hydra", ignore=ignore)
    # the stages call .venv/bin/zero1toa relative to the project root, as in a real checkout
    (dst / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    # the project's own ignores (run folders are git-ignored, as in a real checkout); git treats
    # the .venv symlink as a file, which `.venv/` does not match
    (dst / ".gitignore").write_text((PROJECT / ".gitignore").read_text() + "/.venv\n")
    return dst


def _path_without_the_venv() -> str:
    """PATH minus every folder that holds a `zero1toa` script: stages must not rely on PATH."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "zero1toa").exists()]
    return os.pathsep.join(keep)


def _experiment_metrics(shown: list, name: str) -> dict:
    """`dvc exp show --json`: the metrics files of the experiment called ``name`` (not the workspace)."""
    stack = list(shown)
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("name") == name and item.get("rev") != "workspace" and isinstance(item.get("data"), dict):
                return item["data"].get("metrics") or {}
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise AssertionError(f"no experiment {name!r} in `dvc exp show --json`")


def _set(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("-S", o)]


class Repo:
    def __init__(self, path: Path, orch) -> None:
        self.path, self.orch = path, orch

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        # the venv's tools by their path, and a PATH without the venv (the README's `.venv/bin/dvc
        # repro` from a plain shell): a stage that calls a bare `zero1toa` fails here
        exe = str(VENV_BIN / args[0]) if (VENV_BIN / args[0]).exists() else args[0]
        env = self.orch.env(**GIT_ID, PATH=_path_without_the_venv())
        r = subprocess.run([exe, *args[1:]], cwd=self.path, env=env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message, check=False)


@pytest.fixture(scope="module")
def repo(orchestration, tmp_path_factory):
    path = _copy_project(tmp_path_factory.mktemp("dvc") / "project")
    r = Repo(path, orchestration)
    assert shutil.which("zero1toa", path=_path_without_the_venv()) is None
    r.run("git", "init", "-q")
    r.run("zero1toa", "params", *SMOKE)
    r.commit("zero1toa smoke pipeline")
    first = r.run("dvc", "repro")
    r.first_output = first.stdout + first.stderr
    r.commit("smoke run")
    return r


def test_round_plan_matches_the_method(tmp_path):
    """The resolver DVC's composition calls agrees with zero1toa.nodes.plan_rounds."""
    from flows.commands.params import _plugin
    from flows.config import compose
    from zero1toa.nodes import plan_rounds

    for spatial, temporal, progressive in [(1, 1, True), (3, 2, True), (0, 2, True), (2, 0, False)]:
        cfg = compose([f"stages.spatial.rounds={spatial}", f"stages.temporal.rounds={temporal}", f"stages.progressive={str(progressive).lower()}"])
        plan = _plugin().round_plan(spatial, temporal, progressive)
        assert [(n, r["folder"]) for n, r in plan["rounds"].items()] == [(p.name, p.folder) for p in plan_rounds(cfg)]
        assert plan["final"] == plan_rounds(cfg)[-1].folder
        first = next(iter(plan["rounds"].values()))
        assert first["inputs"] == ["preprocess", "head"]
        temporal_reads = [r["reads"] for r in plan["rounds"].values() if r["stage"] == "temporal"]
        assert all(reads == ["stages.spatial", "stages.spatial_iterations", "stages.temporal", "stages.temporal_iterations"] for reads in temporal_reads)


def test_dvc_yaml_is_generated_from_the_node_identities():
    """The committed dvc.yaml is what the identities render: deps and params cannot drift."""
    from flows.dvc_stages import render_dvc_yaml

    committed = (PROJECT / "dvc.yaml").read_text()
    assert committed == render_dvc_yaml(), "dvc.yaml is stale: run `zero1toa params --write-dvc-yaml` and commit it"


@pytest.mark.parametrize("progressive", [True, False])
def test_stage_params_are_the_settings_each_node_reads(progressive):
    from flows.commands.params import _plugin
    from flows.config import compose
    from flows.dvc_stages import render_stages
    from zero1toa.dag import dag_nodes, key_params, node_kind

    cfg = compose(SMOKE + ["stages.spatial.rounds=2", f"stages.progressive={str(progressive).lower()}"])
    stages = render_stages()["stages"]
    plan = _plugin().round_plan(2, cfg.stages.temporal.rounds, progressive)["rounds"]
    for node in dag_nodes(cfg):
        kind = node_kind(cfg, node)
        params = stages["round"]["do"]["params"] if kind == "round" else stages[node]["params"]
        if kind == "round":
            params = [plan[node]["reads"][int(p[len("${item.reads["):-2])] if p.startswith("${item.reads[") else p for p in params]
        expected = set()
        for key, value in key_params(cfg, node).items():
            if key == "stages":
                expected |= {f"stages.{k}" for k in value}
            else:
                expected.add(key)
        if kind == "evaluate":
            expected.add("run.seed")  # the evaluation's seed (zero1toa.dag.node_seed), part of its identity
        assert set(params) - {f"identity.{kind}"} == expected, node
        assert f"identity.{kind}" in params


def test_repro_runs_every_stage_then_is_a_noop(repo):
    out = repo.first_output
    for stage in ("portrait", "preprocess", "fit_head", "round@spatial_1", "round@temporal_1", "evaluate", "export"):
        assert f"Running stage '{stage}'" in out, out[-3000:]
    run = repo.path / "runs" / "sample"
    assert (run / "export" / "avatar_neutral.ply").exists()
    assert (run / "spatial" / "round_1" / "dataset" / "manifest.json").exists()
    assert not (run / "spatial" / "round_1" / ".work").exists()
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    sp = lock["stages"]["round@spatial_1"]
    assert "stages.temporal" not in sp["params"]["params.yaml"]  # progressive spatial rounds do not read it
    assert "stages.temporal" in lock["stages"]["round@temporal_1"]["params"]["params.yaml"]
    again = repo.run("dvc", "repro")
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in repo.run("dvc", "status").stdout


@pytest.mark.parametrize(
    "override, stale",
    [
        # (the first two also run with --slow; the third already spans several nodes and stages)
        pytest.param("evaluate.fps_repeats=1", {"evaluate"}, marks=pytest.mark.slow),
        pytest.param("stages.temporal.clips_per_round=3", {"temporal_1"}, marks=pytest.mark.slow),
        ("train.loss.l1=0.9", {"spatial_1", "temporal_1"}),
    ],
)
def test_dvc_and_the_node_identities_agree_on_what_is_stale(repo, override, stale):
    """Change one setting: `dvc status` and the identity check name the same stale nodes."""
    from flows.config import compose
    from zero1toa.dag import dag_nodes
    from zero1toa.identity import identity_from_disk
    from zero1toa.nodes import verify_node
    from zero1toa.utils.io import sha256_file

    def stale_sets(overrides):
        repo.run("zero1toa", "params", *overrides)
        status = json.loads(repo.run("dvc", "status", "--json").stdout or "{}")
        cfg = compose(overrides + [f"run.root={repo.path / 'runs'}"])
        run_dir = repo.path / "runs" / "sample"
        image = sha256_file(repo.path / "inputs" / "portrait.png")
        ours = {n for n in dag_nodes(cfg) if verify_node(run_dir, cfg, n, identity_from_disk(cfg, n, run_dir, image)) is not None}
        return {name.split("@", 1)[-1] for name in status}, ours

    # the smoke settings, up to date (right after the fixture's repro; a no-op then)
    repo.run("zero1toa", "params", *SMOKE)
    repo.run("dvc", "repro")
    assert stale_sets(SMOKE) == (set(), set())
    try:
        dvc_stale, ours = stale_sets(SMOKE + [override])
        assert dvc_stale == ours == stale, (dvc_stale, ours)
    finally:
        repo.run("zero1toa", "params", *SMOKE)


def test_dvc_stages_record_one_mlflow_parent_and_identical_lineage(repo):
    from flows.lineage import lineage_from_folder
    from flows.tracking import runs_frame

    run_dir = (repo.path / "runs" / "sample").resolve()
    df = runs_frame("sample")
    df = df[df["tags.zero1toa.run_dir"] == str(run_dir)]
    parents = df[df["tags.zero1toa.parent"] == "true"]
    assert len(parents) == 1 and parents.iloc[0]["tags.zero1toa.launcher"] == "dvc"
    children = df[df["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]]
    assert sorted(children["tags.zero1toa.node"]) == sorted(NODES)
    assert (children["tags.zero1toa.launcher"] == "dvc").all()
    assert children["tags.mlflow.source.git.commit"].str.len().eq(40).all()
    lin = lineage_from_folder(run_dir)
    assert lin["node"].tolist() == NODES
    assert lin["mlflow_run_id"].notna().all() and (lin["launcher"] == "dvc").all()


def test_exp_run_with_an_evaluation_override_reruns_only_evaluate(repo):
    # DVC composes params.yaml afresh from conf/ + these overrides: the smoke settings are repeated
    r = repo.run("dvc", "exp", "run", "-n", "fps-one", *_set(SMOKE + ["evaluate.fps_repeats=1"]))
    ran = [line for line in r.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'evaluate':"], r.stdout[-3000:]
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    assert params["evaluate"]["fps_repeats"] == 1 and "dag" in params  # composed by DVC's Hydra integration
    shown = json.loads(repo.run("dvc", "exp", "show", "--json").stdout)
    # the experiment's own numbers, from the metrics file its commit holds (an ignored or missing
    # file shows as `!` in `dvc exp show`, and as an error entry without "data" here)
    metrics = _experiment_metrics(shown, "fps-one")
    numbers = metrics["metrics/sample.json"]["data"]
    assert isinstance(numbers["fps_render"], (int, float)) and numbers["fps_render"] > 0, metrics
    committed = json.loads(repo.run("git", "show", f"{_exp_rev(repo, 'fps-one')}:metrics/sample.json").stdout)
    assert committed["fps_render"] == numbers["fps_render"]
    table = repo.run("dvc", "exp", "show", "--no-pager", "--csv").stdout
    row = next(line for line in table.splitlines() if line.startswith("fps-one,"))
    header = table.splitlines()[0].split(",")
    assert row.split(",")[header.index("fps_render")] not in ("", "!"), table
    from flows.tracking import runs_frame

    df = runs_frame("sample")
    ev = df[(df.get("tags.zero1toa.dvc_exp") == "fps-one") & (df["tags.zero1toa.node"] == "evaluate")]
    assert len(ev) == 1  # the stage's MLflow run carries the experiment name


def _exp_rev(repo, name: str) -> str:
    refs = repo.run("git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout.splitlines()
    return next(line.split()[0] for line in refs if line.endswith(f"/{name}"))


def test_hydra_composition_turns_round_counts_into_stages(repo, tmp_path):
    """What `dvc exp run -S generator=tiny -S stages.spatial.rounds=3` composes, without running it."""
    work = _copy_project(tmp_path / "compose")
    hydra_dir = str(work / ".dvc" / "hydra")
    code = (
        "from dvc.utils.hydra import compose_and_dump; "
        f"compose_and_dump('params.yaml', {hydra_dir!r}, None, 'dvc_params', {hydra_dir!r}, ['generator=tiny', 'stages.spatial.rounds=3'])"
    )
    subprocess.run([str(VENV_BIN / "python"), "-c", code], cwd=work, check=True, env=repo.orch.env(), timeout=120)
    composed = yaml.safe_load((work / "params.yaml").read_text())
    assert composed["generator"]["kind"] == "tiny"
    assert list(composed["dag"]["rounds"]) == ["spatial_1", "spatial_2", "spatial_3", "temporal_1", "temporal_2"]
    ours = run_cli(["params", "--print", "generator=tiny", "stages.spatial.rounds=3"], repo.orch, cwd=work)
    assert ours.returncode == 0, ours.stderr
    assert yaml.safe_load(ours.stdout) == composed  # `zero1toa params` writes what DVC composes
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    stages = subprocess.run([str(VENV_BIN / "dvc"), "stage", "list", "--name-only"], cwd=work, env=repo.orch.env(), capture_output=True, text=True, check=True).stdout.split()
    assert [s for s in stages if s.startswith("round@")] == ["round@spatial_1", "round@spatial_2", "round@spatial_3", "round@temporal_1", "round@temporal_2"]


def test_push_and_pull_datasets_and_checkpoints_with_a_local_remote(repo, tmp_path):
    from zero1toa.utils.manifest import digest_path

    run = repo.path / "runs" / "sample"
    watched = [run / "spatial" / "round_1" / "dataset", run / "temporal" / "round_1" / "avatar", run / "export"]
    before = {p: digest_path(p) for p in watched}
    repo.run("dvc", "remote", "add", "-f", "-d", "shared", str(tmp_path / "remote"))
    repo.run("dvc", "push")
    shutil.rmtree(repo.path / ".dvc" / "cache")
    for p in watched:
        shutil.rmtree(p)
    repo.run("dvc", "pull")
    assert {p: digest_path(p) for p in watched} == before
    assert "Data and pipelines are up to date" in repo.run("dvc", "status").stdout


def test_plots_render_offline(repo, tmp_path):
    out = tmp_path / "plots"
    repo.run("dvc", "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    assert "<img" in html and "loss_curves.png" in html
    assert "cdn" not in html.lower() and "<script src=\"http" not in html


@pytest.mark.slow
def test_exp_run_with_generator_and_round_count(repo):
    """The README's experiment: another generator and three spatial rounds, end to end."""
    r = repo.run("dvc", "exp", "run", "-n", "tiny-3", *_set(SMOKE + ["generator=tiny", "stages.spatial.rounds=3"]), timeout=1800)
    for stage in ("round@spatial_1", "round@spatial_2", "round@spatial_3", "round@temporal_1", "evaluate", "export"):
        assert f"Running stage '{stage}'" in r.stdout
    assert "Running stage 'preprocess'" not in r.stdout  # the portrait's preprocessing is reused
    shown = json.dumps(json.loads(repo.run("dvc", "exp", "show", "--json").stdout))
    assert "tiny-3" in shown  # (the fps-one experiment belongs to another test, which may be deselected)
