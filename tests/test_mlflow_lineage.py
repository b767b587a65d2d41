"""MLflow records of a pipeline run (parent + children, params, metrics, digests, artifacts) and
`zero1toa lineage` / `zero1toa compare` reading them back."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from contextlib import redirect_stdout

import pandas as pd
import pytest


from zero1toa.env import apply_defaults

apply_defaults()

NODES = ["preprocess", "fit_head", "spatial_1", "temporal_1", "evaluate", "export"]


@pytest.fixture(scope="module")
def client(smoke_run):
    from tasks import tracking as tr

    return tr.client()


def _children(client, parent_id: str) -> dict:
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.data.tags["zero1toa.node"]: r for r in runs}


def test_parent_run_with_one_child_per_node(smoke_run, client):
    parent = client.get_run(smoke_run.first["parent_run_id"])
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert tags["zero1toa.parent"] == "true" and tags["zero1toa.launcher"] == "prefect"
    assert tags["zero1toa.flow_run_id"] == smoke_run.first["flow_run_id"]
    assert len(tags.get("mlflow.source.git.commit", "")) == 40  # the project is a git checkout
    assert parent.data.params["stages.spatial.rounds"] == "1"  # the whole resolved config
    assert parent.data.metrics["nodes_executed"] == len(NODES)
    children = _children(client, parent.info.run_id)
    assert set(children) == set(NODES)
    for node, run in children.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["zero1toa.flow_run_id"] == smoke_run.first["flow_run_id"]
        assert run.data.tags["mlflow.source.git.commit"] == tags["mlflow.source.git.commit"]


def test_children_hold_params_metrics_digests_and_artifacts(smoke_run, client):
    from zero1toa.runfolder import read_run_manifests

    children = _children(client, smoke_run.first["parent_run_id"])
    manifests = read_run_manifests(smoke_run.run_dir)
    # params: the node's resolved config subtree
    assert "train.optim.means" in children["spatial_1"].data.params
    assert "evaluate.resolution" in children["evaluate"].data.params
    assert "train.optim.means" not in children["evaluate"].data.params
    # digests of every input and output, as in the manifests the nodes wrote
    sp = children["spatial_1"].data.tags
    first_round = smoke_run.first["nodes"]["spatial_1"]
    assert sp["zero1toa.output_digest"] == first_round["output_digest"]
    assert sp["zero1toa.trained_on_dataset"] == sp["zero1toa.out.dataset"]
    assert {k for k in sp if k.startswith("zero1toa.in.")} == {f"zero1toa.in.{k}" for k in manifests["spatial_1"]["inputs"]}
    # metrics: losses per step, timings, evaluation numbers
    history = client.get_metric_history(children["spatial_1"].info.run_id, "loss/total")
    assert len(history) >= 2 and sorted(m.step for m in history) == [m.step for m in sorted(history, key=lambda m: m.step)]
    assert children["spatial_1"].data.metrics["time/total"] > 0
    ev = children["evaluate"].data.metrics
    assert ev["fps_render"] > 0 and "landmark_error" in ev and "psnr_reference" in ev
    # artifacts: preview images, videos, the .ply
    ex_files = [a.path for a in client.list_artifacts(children["export"].info.run_id, "export")]
    assert "export/avatar_neutral.ply" in ex_files
    ev_files = {a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "evaluate")}
    assert {"evaluate/contact_sheet.png", "evaluate/turntable.mp4"} <= ev_files
    assert not client.list_artifacts(children["spatial_1"].info.run_id)  # datasets/checkpoints stay with DVC


def test_cached_rerun_records_cached_children_pointing_at_producers(smoke_run, client):
    from flows.config import compose
    from flows.flow import run_portrait

    s = run_portrait("sample", compose(smoke_run.overrides))
    # every node run that really executed, whichever test (flow, CLI, DVC) launched it
    experiments = [e.experiment_id for e in client.search_experiments()]
    produced = {
        r.info.run_id: r.data.tags["zero1toa.node"]
        for r in client.search_runs(experiments, max_results=5000)
        if r.data.tags.get("zero1toa.node") and r.data.tags.get("zero1toa.cached") != "true"
    }
    children = _children(client, s["parent_run_id"])
    assert s["cached"], "the re-run should execute nothing"
    for node in s["cached"]:
        tags = children[node].data.tags
        assert tags["zero1toa.cached"] == "true"
        assert produced.get(tags["zero1toa.source_run_id"]) == node  # points at the run that made it


def _cli(module, **kwargs) -> str:
    import importlib

    mod = importlib.import_module(f"flows.commands.{module}")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert mod.run(Namespace(**kwargs)) == 0
    return buf.getvalue()


def test_lineage_lists_the_chain(smoke_run):
    root = smoke_run.run_dir.parent
    text = _cli("lineage", run="smoke", root=root, csv=False, json=False, wide=False, no_mlflow=False)
    assert all(n in text for n in NODES) and "dataset version -> checkpoint" in text
    df = pd.read_csv(io.StringIO(_cli("lineage", run="smoke", root=root, csv=True, json=False, no_mlflow=False)))
    assert df["node"].tolist() == NODES
    assert df["mlflow_run_id"].notna().all()  # every node traced to the MLflow run that produced its files
    records = json.loads(_cli("lineage", run=str(smoke_run.run_dir), root=None, csv=False, json=True, no_mlflow=False))
    rounds = {r["node"]: r for r in records}
    assert rounds["spatial_1"]["trained_on"] == rounds["spatial_1"]["dataset"]
    assert rounds["temporal_1"]["previous_dataset"] == rounds["spatial_1"]["dataset"]  # which version fed the next round
    assert rounds["temporal_1"]["inputs"]["previous_avatar"] == rounds["spatial_1"]["checkpoint"]
    by_parent = json.loads(_cli("lineage", run=smoke_run.first["parent_run_id"], root=None, csv=False, json=True, no_mlflow=False))
    assert [r["node"] for r in by_parent] == NODES


def test_compare_shows_what_differs(smoke_run):
    from flows.config import compose
    from flows.flow import run_portrait

    # a setting that changes the evaluation's files (the videos' frame rate) shows as a changed node
    b = run_portrait("sample", compose(smoke_run.overrides + ["evaluate.video_fps=12"]))
    a = smoke_run.first["parent_run_id"]
    out = json.loads(_cli("compare", run_a=a, run_b=b["parent_run_id"], root=None, all=False, json=True))
    assert [r["key"] for r in out["params"]] == ["evaluate.video_fps"]
    assert [r["key"] for r in out["nodes"]] == ["evaluate"]
    # one that only changes how speed is measured re-runs the evaluation, with identical results:
    # no node differs (the measured render speed is no part of the output digest)
    c = run_portrait("sample", compose(smoke_run.overrides + ["evaluate.fps_warmup=0"]))
    out = json.loads(_cli("compare", run_a=a, run_b=c["parent_run_id"], root=None, all=False, json=True))
    assert [r["key"] for r in out["params"]] == ["evaluate.fps_warmup"]
    assert out["nodes"] == []
    same = json.loads(_cli("compare", run_a=a, run_b=a, root=None, all=False, json=True))
    assert same["params"] == [] and same["nodes"] == [] and same["metrics"] == []
    run_portrait("sample", compose(smoke_run.overrides))  # restore the shared run folder


def test_every_dag_edge_is_traced_by_digest(smoke_run, client):
    """Each consumer's recorded input digest is its producer's digest, for every edge of the DAG.

    (Consumers used to record a folder's content digest while producers named their output
    digest: preprocess -> fit_head could not be joined.)
    """
    from flows.lineage import lineage_edges, lineage_from_folder
    from zero1toa.dag import dag_nodes, upstream_nodes

    edges = lineage_edges(smoke_run.run_dir)
    traced = set(zip(edges["node"], edges["from_node"]))
    expected = {(node, up) for node in dag_nodes(smoke_run.cfg) for up in upstream_nodes(smoke_run.cfg, node)}
    assert len(expected) >= 8 and expected <= traced, sorted(expected - traced)
    assert set(edges.loc[edges["from_node"].isna(), "input"]) <= {"image"}  # only the photo comes from outside
    # the same join in the tables a user reads: each consumer's input = its producer's output digest
    rows = {r["node"]: r for r in lineage_from_folder(smoke_run.run_dir).to_dict(orient="records")}
    assert rows["fit_head"]["inputs"]["preprocess"] == rows["preprocess"]["output_digest"]
    assert rows["spatial_1"]["inputs"]["head"] == rows["fit_head"]["output_digest"]
    assert rows["fit_head"]["from"]["preprocess"] == "preprocess" and rows["temporal_1"]["from"]["previous_avatar"] == "spatial_1.avatar"
    # and in MLflow: the consumer's zero1toa.in.* tag is the producer's zero1toa.output_digest tag
    children = _children(client, smoke_run.first["parent_run_id"])
    assert children["fit_head"].data.tags["zero1toa.in.preprocess"] == children["preprocess"].data.tags["zero1toa.output_digest"]
    assert children["evaluate"].data.tags["zero1toa.in.head"] == children["fit_head"].data.tags["zero1toa.output_digest"]


def test_lineage_fits_the_terminal_and_wide_shows_everything(smoke_run, monkeypatch):
    root = smoke_run.run_dir.parent
    monkeypatch.setenv("COLUMNS", "100")  # what shutil.get_terminal_size reads first
    text = _cli("lineage", run="smoke", root=root, csv=False, json=False, wide=False, no_mlflow=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    rows = [line for line in lines[1 : lines.index("")] if not line.startswith(" ")]  # (wrapped "from" lines are indented)
    table = {line.split()[0]: line for line in rows}
    assert list(table) == NODES
    assert table["fit_head"].split()[-1] == "preprocess"  # where its input came from, by name
    assert "spatial_1.avatar" in text and "settings and metrics:" in text and "fps_render=" in text
    wide = _cli("lineage", run="smoke", root=root, csv=False, json=False, wide=True, no_mlflow=False)
    assert max(len(line) for line in wide.splitlines()) > 100 and "reference.png=" in wide  # every column, in full
