"""Check that our AniPortrait modules compute what AniPortrait's own code computes, on random weights.

Why: the committed manifest proves that our modules *load* AniPortrait's files (same keys and
shapes); it cannot show that they *use* them the same way (the order of layers, where the pose
features and motion modules enter, the reference attention, classifier-free guidance, the pose
guider's BatchNorm). This script runs one denoising-UNet prediction both ways from the same
random weights and inputs and compares the outputs. It needs AniPortrait's code and the diffusers
it pins, so it runs in two environments:

1. ``--export FILE`` in a throwaway venv with AniPortrait's source (as for
   ``scripts/derive_aniportrait_manifest.py``)::

       /tmp/anienv/bin/python scripts/check_aniportrait_equivalence.py --export /tmp/ani_ref.pt --aniportrait /tmp/aniportrait_src

   builds AniPortrait's reference UNet, denoising UNet (motion modules as inference_v2.yaml) and
   pose guider (``noise_latent_channels=32``; the UNets at widths 32-128 so the guider fits; the
   guider's and motion modules' zero-initialised output layers given random weights so they act),
   and runs AniPortrait's inference logic: the reference UNet once at t = 0 under
   ``ReferenceAttentionControl`` (write / read, fusion "full", CFG on), the pose guider as its
   scripts run it (training mode), then one denoising-UNet call on a CFG batch. It saves the
   weights, inputs and output.
2. ``--compare FILE`` in this project's venv: loads those weights into our modules through our
   checkpoint checks, runs our path, prints the largest differences and exits 1 above tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAMES, RES, CROSS = 3, 128, 16


def _unet_config() -> dict:
    cfg = json.loads((HERE.parent / "zero1toa" / "data" / "sd15_unet_config.json").read_text())
    cfg.update(block_out_channels=[32, 64, 128, 128], layers_per_block=1, attention_head_dim=2, cross_attention_dim=CROSS, sample_size=RES // 8)
    return cfg


def export(out: Path, root: Path) -> None:
    sys.path.insert(0, str(root.resolve()))
    import torch
    from omegaconf import OmegaConf

    from src.models.mutual_self_attention import ReferenceAttentionControl
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel

    torch.manual_seed(0)
    cfg = _unet_config()
    cfg3d = dict(cfg, down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"], up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3, mid_block_type="UNetMidBlock3DCrossAttn")
    kwargs = OmegaConf.to_container(OmegaConf.load(root / "configs" / "inference" / "inference_v2.yaml").unet_additional_kwargs)
    reference = UNet2DConditionModel.from_config(cfg).eval()
    denoising = UNet3DConditionModel.from_config(cfg3d, **kwargs)  # from_config: training mode, as its scripts
    guider = PoseGuider(noise_latent_channels=32, use_ca=True)  # training mode, as its scripts
    with torch.no_grad():
        for name, p in [*guider.named_parameters(), *denoising.named_parameters()]:
            if name.startswith("final_proj") or "temporal_transformer.proj_out" in name:
                p.copy_(torch.randn_like(p) * 0.2)
        ref_latent = torch.randn(1, 4, RES // 8, RES // 8)
        embeds = torch.randn(1, 1, CROSS)
        latents = torch.randn(1, 4, FRAMES, RES // 8, RES // 8)
        pose = (torch.rand(1, 3, FRAMES, RES, RES) > 0.97).float() * 255 * 2 - 1  # uint8-valued maps, 2x - 1
        ref_pose = (torch.rand(1, 3, RES, RES) > 0.97).float() * 255 * 2 - 1
        t = torch.tensor(501)
        ehs = torch.cat([torch.zeros_like(embeds), embeds])  # [uncond; cond]
        writer = ReferenceAttentionControl(reference, do_classifier_free_guidance=True, mode="write", batch_size=1, fusion_blocks="full")
        reader = ReferenceAttentionControl(denoising, do_classifier_free_guidance=True, mode="read", batch_size=1, fusion_blocks="full")
        reference(ref_latent.repeat(2, 1, 1, 1), torch.zeros_like(t), encoder_hidden_states=ehs, return_dict=False)
        reader.update(writer, dtype=torch.float32)
        features = guider(pose.repeat(2, 1, 1, 1, 1), ref_pose)
        pred = denoising(latents.repeat(2, 1, 1, 1, 1), t, encoder_hidden_states=ehs, pose_cond_fea=features, return_dict=False)[0]
    den = denoising.state_dict()
    torch.save(
        {
            "unet_config": cfg,
            "reference_unet": reference.state_dict(),
            "denoising_unet": {k: v for k, v in den.items() if "motion_modules" not in k},
            "motion_module": {k: v for k, v in den.items() if "motion_modules" in k},
            "pose_guider": guider.state_dict(),
            "inputs": {"ref_latent": ref_latent, "embeds": embeds, "latents": latents, "pose": pose, "t": t},
            "features": [f.clone() for f in features],
            "prediction": pred,
        },
        out,
    )
    print(f"wrote {out}: prediction {tuple(pred.shape)}, |pred| mean {pred.abs().mean():.4f}")


def compare(path: Path, atol: float) -> int:
    sys.path.insert(0, str(HERE.parent))
    import torch

    from zero1toa.generate.aniportrait.checkpoint import build_modules, compare_state, expected_files, make_arch
    from zero1toa.generate.aniportrait.reference_attn import ReferenceLink

    data = torch.load(path, weights_only=True)
    arch = make_arch(data["unet_config"], {"guider": {"out_channels": 32}})
    expected = expected_files(arch)
    for stem in expected:
        compare_state(stem, data[stem], expected[stem])  # our checkpoint check accepts AniPortrait's files
    mods = build_modules(arch)
    mods["reference_unet"].load_state_dict(data["reference_unet"])
    mods["denoising_unet"].load_state_dict({**data["denoising_unet"], **data["motion_module"]})
    mods["pose_guider"].load_state_dict(data["pose_guider"])
    for m in mods.values():
        m.eval()
    link = ReferenceLink(mods["reference_unet"], mods["denoising_unet"])
    x = data["inputs"]
    with torch.no_grad():
        link.record(lambda: mods["reference_unet"](x["ref_latent"], torch.zeros((), dtype=torch.long), encoder_hidden_states=x["embeds"]))
        feats = mods["pose_guider"](x["pose"], batch_stats=True)
        link.set_rows(FRAMES)
        ctx = torch.cat([torch.zeros_like(x["embeds"]), x["embeds"]])
        pred = mods["denoising_unet"](x["latents"].repeat(2, 1, 1, 1, 1), x["t"], ctx, [torch.cat([f, f]) for f in feats])
    worst = 0.0
    for k, (ours, theirs) in enumerate(zip(feats, data["features"])):
        d = (ours - theirs[:1]).abs().max().item()
        print(f"pose feature {k} {tuple(ours.shape)}: max |diff| {d:.2e} (scale {theirs.abs().max().item():.2e})")
        worst = max(worst, d / max(1.0, theirs.abs().max().item()))
    ref = data["prediction"]
    for half, name in ((slice(0, 1), "unconditional (no reference)"), (slice(1, 2), "conditional (reference attention)")):
        d = (pred[half] - ref[half]).abs().max().item()
        print(f"prediction, {name}: max |diff| {d:.2e} (scale {ref[half].abs().max().item():.2e})")
        worst = max(worst, d / max(1.0, ref[half].abs().max().item()))
    print(f"worst relative difference {worst:.2e} (tolerance {atol:.0e})")
    return 0 if worst <= atol else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", type=Path)
    ap.add_argument("--aniportrait", type=Path, help="AniPortrait's source (with --export)")
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()
    if args.export:
        export(args.export, args.aniportrait)
    elif args.compare:
        sys.exit(compare(args.compare, args.atol))
    else:
        ap.error("give --export or --compare")


if __name__ == "__main__":
    main()
