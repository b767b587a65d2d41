"""Standard 3DGS ``.ply`` export/import (the layout of the original 3D Gaussian Splatting code).

Viewers (SuperSplat, antimatter15/splat, gsplat's viewer, nerfstudio) read binary little-endian
vertex elements with: ``x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3``, where
``f_rest`` holds the higher SH bands channel-major (all R coefficients, then G, then B),
``opacity`` is a logit, ``scale_*`` are log-scales and ``rot_*`` a wxyz quaternion.
A ``.ply`` is an export of one posed frame, not a checkpoint: it has no binding to the head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.io import atomic_path
from .gaussians import WorldGaussians


def _property_names(num_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(num_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def export_ply(path: Path, gaussians: WorldGaussians) -> Path:
    """Write one frame's Gaussians as a 3DGS .ply (atomically)."""
    g = gaussians
    N = g.means.shape[0]
    colors = g.colors.detach().cpu().float()  # [N, K, 3]
    dc = colors[:, 0, :]
    rest = colors[:, 1:, :].transpose(1, 2).reshape(N, -1)  # channel-major
    opac = g.opacities.detach().cpu().float().clamp(1e-6, 1 - 1e-6)
    data = torch.cat(
        [
            g.means.detach().cpu().float(),
            torch.zeros(N, 3),
            dc,
            rest,
            torch.logit(opac)[:, None],
            torch.log(g.scales.detach().cpu().float().clamp_min(1e-12)),
            torch.nn.functional.normalize(g.quats.detach().cpu().float(), dim=-1),
        ],
        1,
    ).numpy().astype("<f4")
    names = _property_names(rest.shape[1])
    header = "ply\nformat binary_little_endian 1.0\n"
    header += "comment zero1toa 3DGS export\n"
    header += f"element vertex {N}\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(data).tobytes())
    return path


def read_ply(path: Path) -> WorldGaussians:
    """Read a 3DGS .ply written by us or by other 3DGS tools (float properties only)."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    count, names = 0, []
    for line in header:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            count = int(parts[2])
        elif parts[:1] == ["property"]:
            if parts[1] not in ("float", "float32"):
                raise ValueError(f"{path}: property {parts[-1]} has type {parts[1]}; 3DGS files use float")
            names.append(parts[2])
    body = np.frombuffer(raw, dtype="<f4", offset=end + len(b"end_header\n"))
    if body.size != count * len(names):
        raise ValueError(f"{path}: expected {count} x {len(names)} floats, found {body.size}")
    table = torch.from_numpy(body.reshape(count, len(names)).copy())
    col = {n: i for i, n in enumerate(names)}
    for key in ("x", "f_dc_0", "opacity", "scale_0", "rot_0"):
        if key not in col:
            raise ValueError(f"{path} lacks the 3DGS property {key!r}")
    rest_names = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n.split("_")[-1]))
    num_rest = len(rest_names) // 3
    K = num_rest + 1
    degree = int(round(K**0.5)) - 1
    if (degree + 1) ** 2 != K:
        raise ValueError(f"{path}: {len(rest_names)} f_rest values do not form an SH band set")

    def cols(keys: list[str]) -> Tensor:
        return table[:, [col[k] for k in keys]]

    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = cols(rest_names).reshape(count, 3, num_rest).transpose(1, 2) if num_rest else torch.zeros(count, 0, 3)
    return WorldGaussians(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        scales=torch.exp(cols(["scale_0", "scale_1", "scale_2"])),
        opacities=torch.sigmoid(table[:, col["opacity"]]),
        colors=torch.cat([dc[:, None, :], rest], 1),
        sh_degree=degree,
    )
