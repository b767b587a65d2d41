"""AniPortrait's weight folder: its layout, the expected state dicts, and loading with clear errors.

The folder is AniPortrait's own ``pretrained_weights/`` (the names its
``configs/prompts/animation.yaml`` uses), so a user points ``generator.model_dir`` at it as is::

    <model_dir>/
      reference_unet.pth      reference UNet (SD-1.5 UNet without conv_out)           AniPortrait
      denoising_unet.pth      denoising UNet, spatial part (SD-1.5 UNet names)        AniPortrait
      motion_module.pth       its motion modules (AnimateDiff names)                  AniPortrait
      pose_guider.pth         pose guider                                             AniPortrait
      stable-diffusion-v1-5/unet/config.json   the UNets' architecture (SD-1.5; its weights are not read:
                                               the .pth files above replace all of them)
      sd-vae-ft-mse/          config.json + diffusion_pytorch_model.safetensors (or .bin)   AutoencoderKL
      image_encoder/          config.json + model.safetensors (or pytorch_model.bin)        CLIPVisionModelWithProjection
      aniportrait_config.json optional: architecture overrides (motion modules, guider, scheduler);
                              absent for the published weights (AniPortrait's inference_v2.yaml is the default)

Each ``.pth`` may also be given as ``<name>.safetensors``. ``.pth`` files are read with
``torch.load(..., weights_only=True)``: no pickled code runs. Every file is checked against the
state dict our modules expect (built on the meta device, no memory) before anything is loaded: a
wrong file fails with :class:`CheckpointMismatchError` naming missing, unexpected and mis-shaped keys.
The full-size expectation equals the committed manifest ``zero1toa/data/aniportrait_manifest.json``,
which was derived from AniPortrait's own classes (``scripts/derive_aniportrait_manifest.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..model_folder import ModelFolderError
from .guider import GuiderConfig, PoseGuider
from .motion import MotionConfig
from .unet3d import DenoisingUNet3D, MotionPlacement, build_reference_unet

log = logging.getLogger(__name__)

WEIGHT_FILES = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")
UNET_CONFIG = Path("stable-diffusion-v1-5") / "unet" / "config.json"
VAE_DIR, IMAGE_ENCODER_DIR = "sd-vae-ft-mse", "image_encoder"
ARCH_FILE = "aniportrait_config.json"

#: AniPortrait's ``configs/inference/inference_v2.yaml`` ``noise_scheduler_kwargs`` (DDIM, zero-SNR v-prediction).
SCHEDULER_KWARGS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


class CheckpointMismatchError(ModelFolderError):
    """A weight file does not hold the state dict its module expects (the message lists the differences)."""


@dataclass(frozen=True)
class AniPortraitArch:
    """Everything that fixes the networks' shapes. :func:`full_size_arch` is the published model's."""

    unet: dict  # SD-1.5-style UNet2DConditionModel config
    motion: MotionConfig = MotionConfig()
    placement: MotionPlacement = MotionPlacement()
    guider: GuiderConfig = GuiderConfig()
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULER_KWARGS))


def sd15_unet_config() -> dict:
    """SD-1.5's ``unet/config.json`` (committed copy; the manifest was derived from the same file)."""
    return json.loads(resources.files("zero1toa.data").joinpath("sd15_unet_config.json").read_text())


def manifest() -> dict:
    """The committed key/shape manifest of the published files (see the module docstring)."""
    return json.loads(resources.files("zero1toa.data").joinpath("aniportrait_manifest.json").read_text())


def _dataclass_from(cls, values: dict | None, what: str):
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ModelFolderError(f"{ARCH_FILE}: unknown {what} settings {unknown}; known: {sorted(names)}")
    for f in fields(cls):  # JSON lists -> the tuples the dataclasses hold
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def make_arch(unet_config: dict, overrides: dict | None = None) -> AniPortraitArch:
    """The architecture for ``unet_config`` with optional overrides (``aniportrait_config.json``'s content)."""
    o = dict(overrides or {})
    unknown = sorted(set(o) - {"motion", "placement", "guider", "scheduler"})
    if unknown:
        raise ModelFolderError(f"{ARCH_FILE}: unknown sections {unknown}; known: motion, placement, guider, scheduler")
    widths = list(unet_config["block_out_channels"])
    c = widths[0]
    if len(widths) != 4 or widths[1:] != [2 * c, 4 * c, 4 * c]:
        raise ModelFolderError(f"the pose guider needs UNet widths (C, 2C, 4C, 4C) in 4 blocks, the UNet config has {widths}")
    guider = dict(o.get("guider") or {})
    guider.setdefault("out_channels", c)
    return AniPortraitArch(
        unet=dict(unet_config),
        motion=_dataclass_from(MotionConfig, o.get("motion"), "motion"),
        placement=_dataclass_from(MotionPlacement, o.get("placement"), "placement"),
        guider=_dataclass_from(GuiderConfig, guider, "guider"),
        scheduler={**SCHEDULER_KWARGS, **(o.get("scheduler") or {})},
    )


def full_size_arch() -> AniPortraitArch:
    return make_arch(sd15_unet_config())


def build_modules(arch: AniPortraitArch) -> dict[str, nn.Module]:
    """The three networks of ``arch``, on the current default device (use ``torch.device("meta")``)."""
    return {
        "reference_unet": build_reference_unet(arch.unet),
        "denoising_unet": DenoisingUNet3D(arch.unet, arch.motion, arch.placement),
        "pose_guider": PoseGuider(arch.guider),
    }


def expected_files(arch: AniPortraitArch) -> dict[str, dict[str, tuple[int, ...]]]:
    """file stem -> {key: shape} our modules of ``arch`` load (built on the meta device: no memory)."""
    with torch.device("meta"):
        mods = build_modules(arch)
    shapes = {name: {k: tuple(v.shape) for k, v in m.state_dict().items()} for name, m in mods.items()}
    den = shapes.pop("denoising_unet")
    shapes["denoising_unet"] = {k: s for k, s in den.items() if "motion_modules" not in k}
    shapes["motion_module"] = {k: s for k, s in den.items() if "motion_modules" in k}
    return {stem: shapes[stem] for stem in WEIGHT_FILES}


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def compare_state(file: str, state: dict[str, Tensor] | dict[str, tuple], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly ``expected``'s keys and shapes."""
    shape = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in state.items()}
    missing = [k for k in expected if k not in shape]
    unexpected = [k for k in shape if k not in expected]
    wrong = [f"{k} {list(shape[k])} (expected {list(expected[k])})" for k in expected if k in shape and shape[k] != tuple(expected[k])]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: {_listing(wrong)}")
        raise CheckpointMismatchError(
            f"{file} does not hold the AniPortrait state dict it should ({len(expected)} tensors expected, {len(shape)} found): "
            + "; ".join(parts)
            + ". Is it the right file (AniPortrait's published weights, https://huggingface.co/ZJYang/AniPortrait), and for this architecture?"
        )


def weight_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".pth", ".safetensors"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def read_state(path: Path) -> dict[str, Tensor]:
    """A flat state dict from ``.pth`` (``torch.load(weights_only=True)``, memory-mapped) or ``.safetensors``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointMismatchError(f"could not read {path} as a weights-only checkpoint: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointMismatchError(f"{path} is not a flat state dict {{name: tensor}} (got {type(state).__name__})")
    return state


def layout_text() -> str:
    return (
        "  reference_unet.pth, denoising_unet.pth, motion_module.pth, pose_guider.pth   (AniPortrait; or .safetensors)\n"
        f"  {UNET_CONFIG.as_posix()}   (SD-1.5's UNet config; its weights are not needed)\n"
        f"  {VAE_DIR}/config.json + diffusion_pytorch_model.safetensors or .bin   (AutoencoderKL)\n"
        f"  {IMAGE_ENCODER_DIR}/config.json + model.safetensors or pytorch_model.bin   (CLIPVisionModelWithProjection)"
    )


def missing_pieces(folder: Path) -> list[str]:
    """What the folder lacks (empty: complete). Cheap: only looks at file names."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}/ (the folder itself)"]
    out = [f"{stem}.pth" for stem in WEIGHT_FILES if weight_file(folder, stem) is None]
    if not (folder / UNET_CONFIG).is_file():
        out.append(UNET_CONFIG.as_posix())
    for sub, weights in ((VAE_DIR, ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")), (IMAGE_ENCODER_DIR, ("model*.safetensors", "pytorch_model*.bin"))):
        if not (folder / sub / "config.json").is_file():
            out.append(f"{sub}/config.json")
        if not any(any((folder / sub).glob(p)) for p in weights):
            out.append(f"{sub}/" + " or ".join(weights))
    return out


def check_folder(folder: Path) -> None:
    missing = missing_pieces(folder)
    if missing:
        raise ModelFolderError(
            f"AniPortrait weight folder {folder} is incomplete; missing: {', '.join(missing)}.\nExpected layout:\n{layout_text()}\n"
            "Nothing is downloaded: see the README's 'AniPortrait route' for where each file comes from."
        )


def folder_arch(folder: Path) -> AniPortraitArch:
    folder = Path(folder)
    try:
        unet_config = json.loads((folder / UNET_CONFIG).read_text())
        overrides = json.loads((folder / ARCH_FILE).read_text()) if (folder / ARCH_FILE).is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"could not read the architecture of {folder}: {e}") from e
    return make_arch(unet_config, overrides)


def load_networks(folder: Path, arch: AniPortraitArch) -> dict[str, nn.Module]:
    """Check every weight file against ``arch``'s expected state dicts, then load them into our modules.

    Modules are built on the meta device and take the file's tensors (``assign=True``), so a
    3.4 GB UNet is never held twice. The denoising UNet is ``denoising_unet`` + ``motion_module``;
    motion keys that a full ``denoising_unet`` dump may also hold are ignored in favour of
    ``motion_module``.
    """
    folder = Path(folder)
    expected = expected_files(arch)
    states: dict[str, dict[str, Tensor]] = {}
    for stem in WEIGHT_FILES:
        path = weight_file(folder, stem)
        if path is None:
            raise ModelFolderError(f"{folder / (stem + '.pth')} not found")
        state = read_state(path)
        if stem == "denoising_unet":
            extra = [k for k in state if "motion_modules" in k]
            if extra:
                log.info("%s also holds %d motion-module tensors; motion_module's are used", path.name, len(extra))
                state = {k: v for k, v in state.items() if "motion_modules" not in k}
        compare_state(path.name, state, expected[stem])
        states[stem] = state
    with torch.device("meta"):
        mods = build_modules(arch)
    mods["reference_unet"].load_state_dict(states["reference_unet"], strict=True, assign=True)
    mods["denoising_unet"].load_state_dict({**states["denoising_unet"], **states["motion_module"]}, strict=True, assign=True)
    mods["pose_guider"].load_state_dict(states["pose_guider"], strict=True, assign=True)
    for name, m in mods.items():
        left = [k for k, t in [*m.named_parameters(), *m.named_buffers()] if t.device.type == "meta"]
        if left:
            raise RuntimeError(f"{name}: tensors left unloaded: {_listing(left)}")
        m.eval()
    return mods
