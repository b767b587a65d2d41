"""Check every external file a configuration needs before any node runs.

Why: a missing FLAME file or diffusion folder used to fail only after preprocessing and fitting
had run, one missing piece at a time. :func:`missing_assets` lists *every* missing weight
folder, component and file of a configuration at once, in milliseconds, so ``zero1toa run ...
preset=paper`` on a machine without weights fails immediately with the whole list.
"""

from __future__ import annotations

from pathlib import Path


class MissingAssetsError(FileNotFoundError):
    """One or more external files the configuration needs are absent (the message lists them)."""


def missing_assets(cfg) -> list[str]:
    """Human-readable lines, one per missing piece (empty: everything is there). ``cfg``: Config."""
    out: list[str] = []
    g = cfg.generator
    if g.kind == "animatediff":
        from .generate.model_folder import COMPONENTS, _missing_files

        if not g.model_dir:
            subs = " ".join(f"{c.sub}/" for c in COMPONENTS)
            out.append(f"generator.model_dir is not set: generator=animatediff needs a local folder with {subs}")
        elif not Path(g.model_dir).is_dir():
            out.append(f"generator.model_dir {g.model_dir} does not exist")
        else:
            out += [f"generator.model_dir {g.model_dir} lacks {m}" for comp in COMPONENTS for m in _missing_files(Path(g.model_dir), comp)]
    if g.kind == "aniportrait":
        from .generate.aniportrait.checkpoint import missing_pieces

        if not g.model_dir:
            out.append("generator.model_dir is not set: generator=aniportrait needs AniPortrait's weight folder (see the README's 'AniPortrait route')")
        elif not Path(g.model_dir).is_dir():
            out.append(f"generator.model_dir {g.model_dir} does not exist")
        else:
            out += [f"generator.model_dir {g.model_dir} lacks {m}" for m in missing_pieces(Path(g.model_dir))]
    if g.kind == "simulated" and g.truth_dir and not (Path(g.truth_dir) / "subject.json").is_file():
        out.append(f"generator.truth_dir {g.truth_dir} holds no truth subject (subject.json)")
    loss = cfg.train.loss
    if loss.lpips > 0 and loss.lpips_weights and not Path(loss.lpips_weights).is_file():
        out.append(f"train.loss.lpips_weights {loss.lpips_weights} does not exist")
    elif loss.lpips_required and not loss.lpips_weights:
        out.append("train.loss.lpips_weights is not set and this configuration requires LPIPS (convert the public VGG + LPIPS files with scripts/convert_lpips.py)")
    h = cfg.head
    if h.kind == "flame":
        if h.flame_model and not Path(h.flame_model).is_file():
            out.append(f"head.flame_model {h.flame_model} does not exist (download FLAME yourself: it may not be redistributed)")
        if h.flame_embedding and not Path(h.flame_embedding).is_file():
            out.append(f"head.flame_embedding {h.flame_embedding} does not exist")
    if cfg.evaluate.truth_dir and not (Path(cfg.evaluate.truth_dir) / "subject.json").is_file():
        out.append(f"evaluate.truth_dir {cfg.evaluate.truth_dir} holds no truth subject (subject.json)")
    out += [f"stages.temporal.sequences: {s} does not exist" for s in cfg.stages.temporal.sequences if not Path(s).is_file()]
    return out


def check_assets(cfg) -> None:
    """Raise :class:`MissingAssetsError` naming every missing piece (nothing is downloaded)."""
    missing = missing_assets(cfg)
    if missing:
        raise MissingAssetsError("this configuration needs files that are not here:\n  - " + "\n  - ".join(missing))
