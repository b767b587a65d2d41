"""Small synthetic FLAME files for tests (FLAME itself may not be redistributed).

The head is an ellipsoid of a few hundred vertices with FLAME's five joints (root, neck, jaw,
two eyes), a jaw region in the lower front, a sparse joint regressor, random small shape and
expression blendshapes (300 + 100 components, as in the real files) and pose correctives that
only touch the vertices of their own joint.

Two writers reproduce how real files are pickled:
- :func:`write_flame_2020`: protocol 2 with the module names old writers used (``__builtin__``,
  ``numpy.core.multiarray``, ``scipy.sparse.csc``), chumpy ``Ch`` objects for most arrays (the
  file really references ``chumpy.ch.Ch``), posedirs [V, 3, 36];
- :func:`write_flame_2023`: protocol 4 by default (0/1 exercise ``copy_reg._reconstructor``), a
  mix of chumpy and plain arrays, posedirs flattened to [V*3, 36], today's module names.
Both hold the same arrays, so a correct loader animates them identically.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np

V_PARENTS = [-1, 0, 1, 1, 1]
#: MediaPipe ids placed at plausible spots of the synthetic face (x, y in metres), so presets and
#: fitting have the semantic points they use.
SEMANTIC_LANDMARKS: dict[int, tuple[float, float]] = {
    61: (-0.025, -0.045), 78: (-0.02, -0.045), 291: (0.025, -0.045), 308: (0.02, -0.045),
    0: (0.0, -0.035), 13: (0.0, -0.04), 14: (0.0, -0.05), 17: (0.0, -0.058),
    33: (-0.045, 0.03), 133: (-0.018, 0.03), 159: (-0.03, 0.036), 145: (-0.03, 0.024),
    158: (-0.026, 0.036), 153: (-0.026, 0.024), 160: (-0.036, 0.035), 144: (-0.036, 0.025),
    263: (0.045, 0.03), 362: (0.018, 0.03), 386: (0.03, 0.036), 374: (0.03, 0.024),
    385: (0.026, 0.036), 380: (0.026, 0.024), 387: (0.036, 0.035), 373: (0.036, 0.025),
    70: (-0.05, 0.05), 105: (-0.035, 0.056), 107: (-0.015, 0.052), 55: (-0.017, 0.048),
    300: (0.05, 0.05), 334: (0.035, 0.056), 336: (0.015, 0.052), 285: (0.017, 0.048),
    1: (0.0, -0.005), 4: (0.0, 0.0), 168: (0.0, 0.03), 152: (0.0, -0.085),
}


def make_flame_arrays(n_lat: int = 14, n_lon: int = 28, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of a synthetic FLAME model (float64, like the real files)."""
    rng = np.random.default_rng(seed)
    radii = np.array([0.08, 0.11, 0.095])
    verts = [[0.0, radii[1], 0.0]]
    for i in range(1, n_lat + 1):
        theta = np.pi * i / (n_lat + 1)
        for k in range(n_lon):
            phi = 2 * np.pi * k / n_lon
            verts.append([radii[0] * np.sin(theta) * np.sin(phi), radii[1] * np.cos(theta), radii[2] * np.sin(theta) * np.cos(phi)])
    verts.append([0.0, -radii[1], 0.0])
    v = np.asarray(verts)
    V = len(v)
    ring = lambda i, k: 1 + (i - 1) * n_lon + (k % n_lon)  # noqa: E731
    faces = []
    for k in range(n_lon):
        faces.append([0, ring(1, k), ring(1, k + 1)])
        faces.append([V - 1, ring(n_lat, k + 1), ring(n_lat, k)])
    for i in range(1, n_lat):
        for k in range(n_lon):
            a, b, c, d = ring(i, k), ring(i, k + 1), ring(i + 1, k), ring(i + 1, k + 1)
            faces += [[a, c, b], [b, c, d]]
    f = np.asarray(faces, dtype=np.int64)
    # Orient every triangle outwards (normal along the centroid direction).
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = (n * v[f].mean(1)).sum(1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]

    # Skinning: root below the neck cut, jaw in the lower front, eyes at two small patches.
    y, z = v[:, 1], v[:, 2]
    w = np.zeros((V, 5))
    w[:, 1] = 1.0
    root = y < -0.09
    w[root] = [1, 0, 0, 0, 0]
    jaw = (y < -0.035) & (z > 0.02) & ~root
    band = (y >= -0.035) & (y < -0.02) & (z > 0.02)
    w[jaw] = [0, 0, 1, 0, 0]
    w[band] = [0, 0.5, 0.5, 0, 0]
    eye_ids = []
    for j, ex in ((3, 0.03), (4, -0.03)):
        target = np.array([ex, 0.03, 0.09])
        ids = np.argsort(((v - target) ** 2).sum(1))[:3]
        w[ids] = 0
        w[ids, j] = 1
        eye_ids.append(ids)

    # Joint regressor: root = lowest ring, neck = the ring above it, jaw = two side points of a
    # low ring (centroid on the axis), eyes = their patches. Rows sum to one.
    J_reg = np.zeros((5, V))
    lowest = [ring(n_lat, k) for k in range(n_lon)]
    J_reg[0, lowest] = 1.0 / n_lon
    above = [ring(n_lat - 1, k) for k in range(n_lon)]
    J_reg[1, above] = 1.0 / n_lon
    jaw_ring = int(np.argmin([abs(radii[1] * np.cos(np.pi * i / (n_lat + 1)) + 0.03) for i in range(1, n_lat + 1)])) + 1
    J_reg[2, [ring(jaw_ring, n_lon // 4), ring(jaw_ring, 3 * n_lon // 4)]] = 0.5
    J_reg[3, eye_ids[0]] = 1.0 / 3
    J_reg[4, eye_ids[1]] = 1.0 / 3

    shape_scale = 3e-3 / (1 + np.arange(300) / 10)
    expr_scale = 2e-3 / (1 + np.arange(100) / 10)
    shapedirs = np.empty((V, 3, 400))
    shapedirs[:, :, :300] = rng.normal(size=(V, 3, 300)) * shape_scale
    front = (z > 0.0)[:, None, None]
    shapedirs[:, :, 300:] = rng.normal(size=(V, 3, 100)) * expr_scale * front
    posedirs = np.zeros((V, 3, 36))
    for j in range(1, 5):
        touched = w[:, j] > 0
        posedirs[touched, :, (j - 1) * 9:j * 9] = rng.normal(size=(int(touched.sum()), 3, 9)) * 2e-3
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_reg,
        "weights": w,
        "kintree_table": kintree,
    }


class _Ch:
    """Pickles like a chumpy array: class chumpy.ch.Ch, value in the state's 'x'."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64)

    def __getstate__(self) -> dict:
        return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False, "_make_sparse": False}


_Ch.__module__ = "chumpy.ch"
_Ch.__name__ = "Ch"
_Ch.__qualname__ = "Ch"


@contextlib.contextmanager
def _chumpy_names() -> Iterator[None]:
    """Let pickle find ``chumpy.ch.Ch`` while writing; afterwards nothing named chumpy remains."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    mod.Ch = _Ch
    pkg.ch = mod
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = old


def _csc(dense: np.ndarray):
    import scipy.sparse

    return scipy.sparse.csc_matrix(dense)


def write_flame_2020(path: Path, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """A FLAME-2020-style pickle (see module docstring)."""
    a = make_flame_arrays() if arrays is None else arrays
    obj = {
        "v_template": _Ch(a["v_template"]),
        "f": a["f"],
        "shapedirs": _Ch(a["shapedirs"]),
        "posedirs": _Ch(a["posedirs"]),
        "J_regressor": _csc(a["J_regressor"]),
        "weights": _Ch(a["weights"]),
        "kintree_table": a["kintree_table"],
        "J": a["J_regressor"] @ a["v_template"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with _chumpy_names():
        data = pickle.dumps(obj, protocol=2)
    # Old writers (Python 2, NumPy 1, old scipy) named these modules differently.
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray").replace(b"scipy.sparse._csc", b"scipy.sparse.csc")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_flame_2023(path: Path, arrays: dict[str, np.ndarray] | None = None, protocol: int = 4) -> Path:
    """A FLAME-2023-style pickle (see module docstring)."""
    a = make_flame_arrays() if arrays is None else arrays
    V = a["v_template"].shape[0]
    obj = {
        "v_template": a["v_template"],
        "f": a["f"],
        "shapedirs": _Ch(a["shapedirs"]),
        "posedirs": a["posedirs"].reshape(V * 3, 36),
        "J_regressor": _csc(a["J_regressor"]),
        "weights": _Ch(a["weights"]),
        "kintree_table": a["kintree_table"],
    }
    with _chumpy_names():
        data = pickle.dumps(obj, protocol=protocol)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def landmark_ids_105() -> list[int]:
    """105 MediaPipe ids: the semantic ones above, then others in a fixed order."""
    ids = list(SEMANTIC_LANDMARKS)
    extra = [i for i in range(2, 468, 3) if i not in SEMANTIC_LANDMARKS]
    return ids + extra[: 105 - len(ids)]


def write_mediapipe_embedding(path: Path, arrays: dict[str, np.ndarray] | None = None, seed: int = 1) -> Path:
    """A 105-point MediaPipe embedding npz on the synthetic head's front."""
    a = make_flame_arrays() if arrays is None else arrays
    rng = np.random.default_rng(seed)
    v, f = a["v_template"], a["f"].astype(np.int64)
    cent = v[f].mean(1)
    front = np.nonzero((v[f][:, :, 2] > 0.02).all(1) & (np.abs(cent[:, 0]) < 0.06) & (np.abs(cent[:, 1]) < 0.09))[0]
    ids = landmark_ids_105()
    face_idx, bary = [], []
    for i in ids:
        if i in SEMANTIC_LANDMARKS:
            target = np.asarray(SEMANTIC_LANDMARKS[i])
            face_idx.append(front[np.argmin(((cent[front, :2] - target) ** 2).sum(1))])
        else:
            face_idx.append(rng.choice(front))
        bary.append(rng.dirichlet([2.0, 2.0, 2.0]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, lmk_face_idx=np.asarray(face_idx, dtype=np.int64), lmk_b_coords=np.asarray(bary), landmark_indices=np.asarray(ids, dtype=np.int64))
    return path


def write_landmark68_npy(path: Path, arrays: dict[str, np.ndarray] | None = None, seed: int = 2) -> Path:
    """A DECA-style ``landmark_embedding.npy``: pickled dict, dynamic contour as torch tensors."""
    import torch

    a = make_flame_arrays() if arrays is None else arrays
    rng = np.random.default_rng(seed)
    F = len(a["f"])
    full_idx = rng.integers(0, F, size=(1, 68))
    full_bary = rng.dirichlet([1.0, 1.0, 1.0], size=(1, 68))
    content = {
        "static_lmk_faces_idx": full_idx[0, 17:],
        "static_lmk_bary_coords": full_bary[0, 17:],
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, F, size=(79, 17))),
        "dynamic_lmk_bary_coords": torch.from_numpy(rng.dirichlet([1.0, 1.0, 1.0], size=(79, 17))),
        "full_lmk_faces_idx": full_idx,
        "full_lmk_bary_coords": full_bary,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(content, dtype=object), allow_pickle=True)
    return path


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_pickle(path: Path, marker: Path) -> Path:
    """A 'FLAME file' whose unpickling would run ``touch marker`` through os.system."""
    path = Path(path)
    path.write_bytes(pickle.dumps({"v_template": _Evil(marker), "f": np.zeros((1, 3))}, protocol=2))
    return path
