"""Preprocessing time (the preprocess and fit_head nodes) for a 512x512 and a 4000x3000 photo.

    .venv/bin/python benchmarks/preprocess.py [--repeats 3]

The 4000x3000 image is the bundled portrait enlarged onto a phone-sized canvas (the face stays
a realistic fraction of the frame). Prints the median wall time per stage, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zero1toa.env import apply_defaults  # noqa: E402

apply_defaults()


def main() -> None:
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from zero1toa.preprocess.head_fit import HeadFitConfig, fit_head
    from zero1toa.preprocess.pipeline import PreprocessConfig, preprocess_image
    from zero1toa.sample import sample_portrait

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        small = tmp / "512.png"
        Image.fromarray(sample_portrait()).save(small)
        big_img = np.full((3000, 4000, 3), 180, np.uint8)
        big_img[:, 500:3500] = cv2.resize(sample_portrait(), (3000, 3000), interpolation=cv2.INTER_CUBIC)
        big = tmp / "4000x3000.jpg"
        Image.fromarray(big_img).save(big, quality=92)
        for path in (small, big):
            pre_t, fit_t = [], []
            for r in range(args.repeats + 1):  # first run warms up (model load)
                run = tmp / f"run_{path.stem}_{r}"
                t0 = time.perf_counter()
                man = preprocess_image(path, run / "preprocess", PreprocessConfig())
                t1 = time.perf_counter()
                fit_head(run / "preprocess", run / "head", HeadFitConfig())
                t2 = time.perf_counter()
                if r:
                    pre_t.append(t1 - t0)
                    fit_t.append(t2 - t1)
            rows.append((path.stem, statistics.median(pre_t), statistics.median(fit_t), man["timings"]))
    print(f"{'image':12s} {'preprocess s':>13s} {'fit_head s':>11s} {'total s':>8s}   preprocess stages (last run)")
    for name, pre, fit, stages in rows:
        print(f"{name:12s} {pre:13.3f} {fit:11.3f} {pre + fit:8.3f}   {stages}")


if __name__ == "__main__":
    main()
