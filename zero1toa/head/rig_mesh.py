"""The built-in rig's mesh under construction, and the small geometry helpers its parts share.

Every part builder (skull, eyeballs, mouth, neck and torso) appends vertices together with
their skinning weights and triangles together with their part label to one :class:`RigMesh`.
Declaring a vertex's weights where the vertex is made keeps each part's skinning next to the
geometry it belongs to, instead of in one long pass that has to know every part's indices.

All geometry is numpy float64 in the canonical head frame (metres, +x subject's left, +y up,
+z forward); the rig converts to float32 tensors once, at the end.
"""

from __future__ import annotations

import numpy as np

from ..render.camera import Cameras

#: Semantic label of every triangle (used for initial colours and per-part regularisers).
#: New parts are appended at the end: saved label ids (and tests) rely on the existing indices.
PART_NAMES: tuple[str, ...] = (
    "face",
    "skull",
    "neck",
    "torso",
    "eyeball",
    "mouth",
    "backdrop",
    "teeth_upper",
    "teeth_lower",
    "tongue",
)

#: Colours of the mouth's interior parts, which no photo of a closed mouth shows: the one table the
#: initial Gaussians, the embedded generator's fill and the ground-truth subject all start from.
MOUTH_INTERIOR_COLOURS: dict[str, tuple[float, float, float]] = {
    "teeth_upper": (0.86, 0.83, 0.76),
    "teeth_lower": (0.80, 0.77, 0.70),  # lower teeth sit in the upper teeth's shadow
    "tongue": (0.55, 0.26, 0.27),
}

#: Joint indices, in :data:`zero1toa.head.base.JOINT_NAMES` order.
ROOT, NECK, JAW, EYE_L, EYE_R = range(5)
NUM_JOINTS = 5


class RigMesh:
    """Growing lists of vertices (with LBS weights) and labelled triangles."""

    def __init__(self) -> None:
        self._verts: list[np.ndarray] = []  # blocks of [N, 3]
        self._weights: list[np.ndarray] = []  # blocks of [N, NUM_JOINTS]
        self.faces: list[list[int]] = []
        self.labels: list[int] = []
        self.num_vertices = 0

    def add(self, points: np.ndarray, weights: np.ndarray) -> list[int]:
        """Append points [N, 3] skinned by weights [N, 5] (or [5], shared); returns their indices."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(pts), NUM_JOINTS)).copy()
        start = self.num_vertices
        self._verts.append(pts)
        self._weights.append(w)
        self.num_vertices += len(pts)
        return list(range(start, self.num_vertices))

    def add_faces(self, triangles: list[list[int]] | np.ndarray, part: str) -> None:
        """Append triangles (vertex index triples) labelled ``part`` (a name in PART_NAMES)."""
        self.faces += [[int(v) for v in t] for t in triangles]
        self.labels += [PART_NAMES.index(part)] * len(triangles)

    def vertices(self) -> np.ndarray:
        """[V, 3] all vertices so far."""
        return np.concatenate(self._verts)

    def weights(self) -> np.ndarray:
        """[V, 5] all skinning weights so far."""
        return np.concatenate(self._weights)


def joint_weights(joint: int) -> np.ndarray:
    """[5] one joint, fully."""
    w = np.zeros(NUM_JOINTS)
    w[joint] = 1.0
    return w


def jaw_blend_weights(jaw: np.ndarray) -> np.ndarray:
    """[N] jaw share -> [N, 5]: the rest follows the neck (which carries the skull)."""
    w = np.zeros((len(jaw), NUM_JOINTS))
    w[:, JAW] = jaw
    w[:, NECK] = 1 - jaw
    return w


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors a [N,3] and b [3]."""
    dot = np.clip((a * b).sum(-1, keepdims=True), -0.9999, 0.9999)
    omega = np.arccos(dot)
    so = np.sin(omega)
    return np.sin((1 - t) * omega) / so * a + np.sin(t * omega) / so * b


def ring_strip(ring_a: list[int], ring_b: list[int]) -> list[list[int]]:
    """Triangles joining two closed rings of equal length, wound a -> b."""
    n = len(ring_a)
    tris = []
    for i in range(n):
        j = (i + 1) % n
        tris.append([ring_a[i], ring_b[i], ring_a[j]])
        tris.append([ring_a[j], ring_b[i], ring_b[j]])
    return tris


def split_loop(loop: tuple[int, ...], corner_a: int, corner_b: int) -> tuple[list[int], list[int]]:
    """Split a closed loop (an eye, the mouth) at two corners into its two paths, each a -> b."""
    n = len(loop)
    ia, ib = loop.index(corner_a), loop.index(corner_b)
    path1 = [loop[(ia + k) % n] for k in range((ib - ia) % n + 1)]
    path2 = [loop[(ib + k) % n] for k in range((ia - ib) % n + 1)][::-1]
    return path1, path2


def arc_param(points: np.ndarray) -> np.ndarray:
    """[N] normalised arc length (0 .. 1) along a polyline [N, 3]."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return s / max(s[-1], 1e-12)


def laplacian_smooth(values: np.ndarray, faces: np.ndarray, fixed: np.ndarray, iterations: int) -> np.ndarray:
    """Average each free vertex's value with its neighbours' (fixed vertices keep theirs)."""
    V = values.shape[0]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    deg = np.bincount(edges[:, 0], minlength=V).clip(1)
    out = values.copy()
    for _ in range(iterations):
        acc = np.zeros_like(out)
        np.add.at(acc, edges[:, 0], out[edges[:, 1]])
        new = acc / deg[:, None] if out.ndim == 2 else acc / deg
        out = np.where(fixed[:, None] if out.ndim == 2 else fixed, out, new)
    return out


def project_np(points: np.ndarray, camera: Cameras) -> np.ndarray:
    """[N, 3] world -> [N, 2] pixels in camera 0 (numpy: the rig builder projects small sets often)."""
    R = camera.viewmats[0, :3, :3].double().numpy()
    t = camera.viewmats[0, :3, 3].double().numpy()
    K = camera.Ks[0].double().numpy()
    c = points @ R.T + t
    return np.stack([K[0, 0] * c[:, 0] / c[:, 2] + K[0, 2], K[1, 1] * c[:, 1] / c[:, 2] + K[1, 2]], -1)
