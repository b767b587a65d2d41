"""Shared test setup: offline/quiet environment, a small torch thread count, the sample portrait."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zero1toa.env import apply_defaults

apply_defaults()
#: Torch threads per test process: 2 in all, shared among pytest-xdist's workers (the test
#: command runs two on two cores: one thread each, so workers never oversubscribe the cores).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # a worker (it inherits the controller's setting)
    os.environ["OMP_NUM_THREADS"] = str(max(1, 2 // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

torch.set_num_threads(min(int(os.environ["OMP_NUM_THREADS"]), torch.get_num_threads()))


# Session fixtures of the orchestration tests, registered once here: imported into several
# test modules instead, each module would get its own "session" instance (a second Prefect
# server, a second smoke DAG run).
from pipeline_fixtures import orchestration, smoke_run  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def portrait():
    """The bundled sample portrait as uint8 [512, 512, 3], read-only (shared by the session)."""
    from zero1toa.sample import sample_portrait

    image = sample_portrait()
    image.setflags(write=False)
    return image


@pytest.fixture(scope="session")
def runner():
    """One face detection + face mesh runner (TFLite interpreters) for the whole session."""
    from zero1toa.preprocess.facemesh import FaceMeshRunner

    return FaceMeshRunner()


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory) -> Path:
    from zero1toa.sample import write_sample_portrait

    return write_sample_portrait(tmp_path_factory.mktemp("sample") / "astronaut.png")


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory, sample_image) -> Path:
    """Preprocess + fit of the sample portrait at 256 px (shared by many tests)."""
    from zero1toa.preprocess.head_fit import HeadFitConfig, fit_head
    from zero1toa.preprocess.pipeline import PreprocessConfig, preprocess_image

    run = tmp_path_factory.mktemp("fitted") / "run"
    preprocess_image(sample_image, run / "preprocess", PreprocessConfig(resolution=256))
    fit_head(run / "preprocess", run / "head", HeadFitConfig())
    return run


@pytest.fixture(scope="session")
def truth_dir(tmp_path_factory) -> Path:
    """The ground-truth benchmark's truth subject at 256 px (built once per session)."""
    from zero1toa.bench.truth import build_truth_subject

    return build_truth_subject(tmp_path_factory.mktemp("truth") / "subject", seed=0, resolution=256)


@pytest.fixture(scope="session")
def truth(truth_dir):
    from zero1toa.bench.truth import TruthSubject

    return TruthSubject.load(truth_dir)
