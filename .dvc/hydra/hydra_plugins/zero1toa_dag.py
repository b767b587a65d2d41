"""The round plan for dvc.yaml, composed into params.yaml by DVC's Hydra integration.

DVC's ``foreach`` needs a list or dict, but the number of rounds is an integer setting
(``stages.spatial.rounds``). This module registers the OmegaConf resolver ``z1_dag`` that turns
the two round counts into the plan ``dvc.yaml`` iterates over; ``.dvc/hydra/dvc_params.yaml``
(the primary config DVC composes) calls it, so ``dvc exp run -S stages.spatial.rounds=3``
composes a params.yaml with three spatial round stages.

DVC imports every module under ``<hydra.plugins_path>/hydra_plugins`` before composing (Hydra's
plugin discovery); ``zero1toa params`` loads this file directly. It must stay light (DVC's process should not pay for torch: the only zero1toa import is
:mod:`zero1toa.identity`, which imports no torch); ``tests/test_dvc.py`` checks that
it agrees with ``zero1toa.nodes.plan_rounds``.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def round_plan(spatial: int, temporal: int, progressive: bool = True) -> dict:
    """{"rounds": {name: {stage, folder, inputs, reads}}, "final": folder of the last round}."""
    rounds = {}
    previous = None
    for stage, count in (("spatial", int(spatial)), ("temporal", int(temporal))):
        for i in range(1, count + 1):
            folder = f"{stage}/round_{i}"
            # what the round reads besides preprocess/ and head/ (two slots: dvc.yaml lists both)
            inputs = [f"{previous}/dataset", f"{previous}/avatar"] if previous else ["preprocess", "head"]
            # the stage settings a round reads (four slots: dvc.yaml lists all four; a progressive
            # spatial round reads no temporal settings, so it repeats its own keys), the same keys
            # as zero1toa.dag.key_params
            spatial_keys = ["stages.spatial", "stages.spatial_iterations"]
            if stage == "spatial" and bool(progressive):
                reads = spatial_keys * 2
            else:
                reads = spatial_keys + ["stages.temporal", "stages.temporal_iterations"]
            rounds[f"{stage}_{i}"] = {"stage": stage, "folder": folder, "inputs": inputs, "reads": reads}
            previous = folder
    return {"rounds": rounds, "final": previous}


def _resolver(spatial, temporal, progressive=True):
    if isinstance(progressive, str):
        progressive = progressive.strip().lower() not in ("false", "0", "no")
    return OmegaConf.create(round_plan(int(spatial), int(temporal), progressive))


#: The config sections the environment identity reads (never ``identity`` itself: no recursion).
_IDENTITY_SECTIONS = ("head", "generator", "train", "evaluate", "stages")


def _identity_resolver(*, _root_):
    """``${z1_identity:}``: library versions and external-file digests per node kind.

    The same function ``zero1toa params`` calls (:func:`zero1toa.identity.environment_identity`;
    that module imports neither torch nor the orchestrators, so DVC's process stays light).
    """
    from zero1toa.identity import environment_identity

    cfg = {k: OmegaConf.to_container(_root_[k], resolve=True) for k in _IDENTITY_SECTIONS if k in _root_}
    return OmegaConf.create(environment_identity(cfg))


if not OmegaConf.has_resolver("z1_dag"):
    OmegaConf.register_new_resolver("z1_dag", _resolver)
if not OmegaConf.has_resolver("z1_identity"):
    OmegaConf.register_new_resolver("z1_identity", _identity_resolver)
