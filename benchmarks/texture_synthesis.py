"""Hair texture synthesis on an atlas-sized test: speed and "texture, not smear".

Builds a 512 x 256 (W x H) atlas-like image: the astronaut portrait's head (scikit-image's
public-domain ``astronaut``) fills the middle half of the columns (the part the photo saw, like the
front of the head atlas); the other half, across the wrapping left/right border (the back of the
head), is unknown and filled with :func:`zero1toa.texture.synthesis.synthesize` from the hair
pixels, following :func:`~zero1toa.texture.synthesis.orientation_field` (prior: vertical, hair
falls down). Prints the time on one core and the high-frequency energy (mean |Laplacian|) of the
synthesised fill relative to the exemplar hair and to the low-frequency fill, and writes
``texture_synthesis_<fill>.png``: input (unknown black, non-hair known dimmed) | low-frequency fill
| synthesis | orientation field (hue: angle, brightness: coherence), and
``synthesis_rolled_<fill>.png``: the synthesis rolled by half a turn (the back of the head centred).

    .venv/bin/python benchmarks/texture_synthesis.py                 # temp dir
    .venv/bin/python benchmarks/texture_synthesis.py --out /tmp/tex --patch 12 --repeat 3
    .venv/bin/python benchmarks/texture_synthesis.py --fill all      # continue the visible hair too
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def atlas_case(height: int = 256, fill_mode: str = "back"):
    """(image [H, 2H, 3] float32, known, fill, exemplar) of the astronaut's head on an atlas.

    The middle half of the columns is the photo's head crop (front of the atlas); ``known`` is its
    head (hair and face, not the photo's backdrop, which a head atlas would not contain),
    ``exemplar`` its hair, ``fill`` the other half of the columns (the back of the head, across
    the wrap border). The backdrop pixels are neither known nor filled (returned unchanged), or,
    with ``fill_mode="all"``, filled too (so the synthesis has to continue the visible hair where
    it touches the fill).
    """
    import cv2
    import numpy as np
    import skimage.data

    width = 2 * height
    photo = skimage.data.astronaut()[5:175, 145:305]  # head: hair, face, some background
    crop = cv2.resize(photo, (width // 2, height), interpolation=cv2.INTER_AREA)
    image = np.zeros((height, width, 3), np.float32)
    x0 = width // 4
    image[:, x0 : x0 + width // 2] = crop.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    yy, xx = np.mgrid[0:height, 0 : width // 2] / height
    face = ((yy - 0.74) / 0.34) ** 2 + ((xx - 0.50) / 0.26) ** 2 <= 1.0
    hair = (hsv[..., 0] >= 14) & (hsv[..., 0] <= 30) & (hsv[..., 1] > 60) & ~face
    hair = cv2.morphologyEx(hair.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    head = cv2.morphologyEx((hair | face).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)) > 0
    exemplar = np.zeros((height, width), bool)
    exemplar[:, x0 : x0 + width // 2] = hair
    known = np.zeros((height, width), bool)
    known[:, x0 : x0 + width // 2] = head
    fill = np.ones((height, width), bool)
    fill[:, x0 : x0 + width // 2] = False
    if fill_mode == "all":
        fill = ~known
    return image, known, fill, exemplar


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNG (default: a temp dir)")
    ap.add_argument("--height", type=int, default=256, help="atlas rows (columns: twice as many)")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument(
        "--fill", choices=("back", "all"), default="back", help="back: the back half; all: every unknown pixel"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=3.0, help="orientation_field structure-tensor scale")
    ap.add_argument("--falloff", type=float, default=24.0, help="orientation_field prior_falloff (pixels)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads (1: the one-core budget)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import cv2
    import numpy as np

    cv2.setNumThreads(args.threads)
    from zero1toa.texture.synthesis import fill_low_frequency, high_frequency_energy, orientation_field, synthesize

    image, known, fill, exemplar = atlas_case(args.height, args.fill)
    h, w = known.shape
    times, cpu, t_orient = [], [], []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        angle, coherence = orientation_field(
            image, exemplar, prior_angle=np.pi / 2, sigma=args.sigma, prior_falloff=args.falloff, wrap_x=True
        )
        t1, c1 = time.perf_counter(), time.process_time()
        out, info = synthesize(
            image, known, fill, angle, patch=args.patch, seed=args.seed, wrap_x=True, exemplar=exemplar,
            return_info=True,
        )
        times.append(time.perf_counter() - t1)
        cpu.append(time.process_time() - c1)
        t_orient.append(t1 - t0)
    low = fill_low_frequency(image, exemplar, wrap_x=True)
    low_img = image.copy()
    low_img[fill] = low[fill]

    e_ex = high_frequency_energy(image, exemplar)
    e_syn = high_frequency_energy(out, fill)
    e_low = high_frequency_energy(low_img, fill)
    mu_ex, sd_ex = image[exemplar].mean(0), image[exemplar].std(0)
    mu_fill, sd_fill = out[fill].mean(0), out[fill].std(0)
    print(f"atlas {w}x{h}, fill {int(fill.sum())} px ({fill.mean():.0%}), exemplar {int(exemplar.sum())} px, "
          f"patch {args.patch}")
    print(f"patches placed {info['patches']}, candidates {info['candidates']}, rotated {info['rotated']}, "
          f"coarse shading {info.get('coarse_shading', False)}, threads {args.threads}")
    print(f"synthesize: median {np.median(times):.2f} s wall (all: {', '.join(f'{t:.2f}' for t in times)}), "
          f"{np.median(cpu):.2f} s CPU (on a shared machine the CPU time is the one-core figure)")
    print(f"orientation_field: median {np.median(t_orient):.2f} s")
    print(f"high-frequency energy: exemplar {e_ex:.4f}, synthesis {e_syn:.4f}, low-frequency fill {e_low:.4f}")
    ratio_low = f"{e_syn / e_low:.1f}" if e_low > 1e-6 else "inf (the low-frequency fill is flat)"
    print(f"  synthesis / exemplar = {e_syn / e_ex:.2f}, low-frequency / exemplar = {e_low / e_ex:.3f}, "
          f"synthesis / low = {ratio_low}")
    print(f"colour mean exemplar {np.round(mu_ex, 3)} fill {np.round(mu_fill, 3)}; "
          f"std exemplar {np.round(sd_ex, 3)} fill {np.round(sd_fill, 3)}")

    # orientation visual: hue = angle, value = coherence
    hsv = np.stack(
        [angle / np.pi * 360.0, np.ones_like(angle), np.clip(coherence, 0, 1)], -1  # cyclic hue
    ).astype(np.float32)
    orient_rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    shown = np.where(known[..., None], image, 0.0).astype(np.float32)  # unknown: black
    shown[~exemplar & known] *= 0.6  # known but not exemplar (face): dimmed
    panels = [shown, low_img, out, orient_rgb]
    sep = np.ones((h, 4, 3), np.float32)
    sheet = np.concatenate(sum(([p, sep] for p in panels), [])[:-1], 1)
    folder = args.out or Path(tempfile.mkdtemp(prefix="texture_synthesis_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"texture_synthesis_{args.fill}.png"
    cv2.imwrite(str(path), (np.clip(sheet, 0, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8))
    # the synthesis alone, rolled so the wrap border (the back of the head) is in the middle
    rolled = (np.roll(out, w // 2, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(folder / f"synthesis_rolled_{args.fill}.png"), rolled)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
