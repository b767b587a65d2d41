"""The diffusers model folder: its expected layout, and a check that names what is missing.

Used by the AnimateDiff + ControlNet generator before it loads anything, and by the preflight
check (``zero1toa/preflight.py``) before a run starts, so a missing component is reported in
milliseconds, once, with the whole expected layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..utils.io import sha256_bytes, sha256_file


class ModelFolderError(FileNotFoundError):
    """A model folder is missing, or lacks components; the message lists expected vs missing."""


@dataclass(frozen=True)
class _Component:
    sub: str  # sub-folder name
    what: str  # the class it holds
    needs: tuple[tuple[str, ...], ...]  # each entry: alternatives (glob patterns), one must match


_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model*.safetensors",)
_HF_WEIGHTS = ("model*.safetensors",)

COMPONENTS: tuple[_Component, ...] = (
    _Component("unet", "UNet2DConditionModel (SD-1.5 style)", (("config.json",), _DIFFUSERS_WEIGHTS)),
    _Component("motion_adapter", "MotionAdapter (AnimateDiff)", (("config.json",), _DIFFUSERS_WEIGHTS)),
    _Component("controlnet", "ControlNetModel (MediaPipe face landmarks)", (("config.json",), _DIFFUSERS_WEIGHTS)),
    _Component("vae", "AutoencoderKL", (("config.json",), _DIFFUSERS_WEIGHTS)),
    _Component("text_encoder", "CLIPTextModel", (("config.json",), _HF_WEIGHTS)),
    _Component("tokenizer", "CLIPTokenizer", (("vocab.json", "tokenizer.json"), ("merges.txt", "tokenizer.json"))),
    _Component("scheduler", "scheduler config", (("scheduler_config.json",),)),
)
OPTIONAL_COMPONENTS: tuple[_Component, ...] = (
    _Component("image_encoder", "CLIPVisionModelWithProjection (for IP-Adapter)", (("config.json",), _HF_WEIGHTS)),
    _Component("ip_adapter", "IP-Adapter weights", (("*.safetensors",),)),
)


def _missing_files(folder: Path, comp: _Component) -> list[str]:
    """What ``comp`` lacks under ``folder``: [] when complete, ["<sub>/"] when the sub-folder is absent."""
    sub = folder / comp.sub
    if not sub.is_dir():
        return [f"{comp.sub}/"]
    missing = []
    for alternatives in comp.needs:
        if not any(any(sub.glob(pattern)) for pattern in alternatives):
            missing.append(f"{comp.sub}/" + " or ".join(alternatives))
    return missing


def _layout_text() -> str:
    lines = []
    for comp in COMPONENTS + OPTIONAL_COMPONENTS:
        opt = "  (optional)" if comp in OPTIONAL_COMPONENTS else ""
        files = " + ".join(" or ".join(alt) for alt in comp.needs)
        lines.append(f"  {comp.sub + '/':16s} {files}  [{comp.what}]{opt}")
    return "\n".join(lines)


def check_model_folder(folder: Path, reference: str = "auto") -> bool:
    """Check ``folder`` holds every component; return whether the IP-Adapter pair is to be used.

    ``reference``: "ip_adapter" requires image_encoder/ and ip_adapter/; "none" ignores them;
    "auto" uses them when both are complete and fails when only part of the pair is there.
    Raises :class:`ModelFolderError` listing the expected layout and exactly what is missing.
    """
    folder = Path(folder)
    if reference not in ("auto", "ip_adapter", "none"):
        raise ValueError(f"reference must be 'auto', 'ip_adapter' or 'none', got {reference!r}")
    if not folder.is_dir():
        raise ModelFolderError(
            f"diffusion model folder {folder} does not exist. Expected sub-folders:\n{_layout_text()}\n"
            "Nothing is downloaded: place the weights there (safetensors) or build a tiny test model "
            "with zero1toa.generate.tiny.build_tiny_animatediff."
        )
    missing = [m for comp in COMPONENTS for m in _missing_files(folder, comp)]
    optional_missing = [m for comp in OPTIONAL_COMPONENTS for m in _missing_files(folder, comp)]
    present_optional = [c.sub for c in OPTIONAL_COMPONENTS if (folder / c.sub).exists()]
    use_ip = False
    if reference == "ip_adapter":
        missing += optional_missing
        use_ip = True
    elif reference == "auto" and present_optional:
        # One half of the pair without the other is a mistake, not a choice.
        missing += optional_missing
        use_ip = not optional_missing
    if missing:
        raise ModelFolderError(
            f"diffusion model folder {folder} is incomplete; missing: {', '.join(missing)}.\n"
            f"Expected layout:\n{_layout_text()}"
        )
    return use_ip


def config_digest(folder: Path) -> str:
    """sha256 over the folder's config/tokenizer files (*.json, *.txt): names the weights cheaply.

    Weight files (GBs) are not hashed; their configs, and so their architecture, are.
    """
    folder = Path(folder)
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")):
        parts.append(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n")
    return sha256_bytes("".join(parts).encode())
