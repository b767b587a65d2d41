"""The built-in rig's expressions: how much each face vertex follows the jaw, and the named basis.

The basis is small and named (jaw open, smile, frown, pucker, stretch, blinks, brow raise and
frown) so the expression schedule and the tracker can drive it by name. Each entry is a smooth
displacement field around the landmarks that move (Shepard interpolation of a few control
displacements, with an envelope that keeps a local expression local), in multiples of the face
width W so the same magnitudes fit every face. jaw_open is mostly the jaw joint's rotation
(:data:`JAW_OPEN_RAD`); its blendshape only relaxes the lips forward.

Added parts inherit: the mouth cavity's rings follow their lip vertex, fading with depth; the
eyeballs sink a little under a closed lid; teeth and tongue have no blendshape at all (they are
rigid, carried by the skull and the jaw).
"""

from __future__ import annotations

import numpy as np

from . import topology as T
from .rig_eyes import Eyeball
from .rig_mesh import arc_param, laplacian_smooth, smoothstep, split_loop

EXPRESSION_NAMES: tuple[str, ...] = (
    "jaw_open",
    "smile",
    "frown",
    "lip_pucker",
    "lip_stretch",
    "blink_left",
    "blink_right",
    "brow_raise",
    "brow_frown",
)
#: Jaw rotation (radians) at jaw_open = 1; FLAME's jaw pose reaches about this for a wide open mouth.
JAW_OPEN_RAD = 0.35


def face_jaw_weights(face: np.ndarray, face_tris: np.ndarray, W: float) -> np.ndarray:
    """How much each face vertex follows the jaw: lower lip 1, upper lip 0, smooth elsewhere."""
    topo = T.facemesh_topology()
    mouth = list(topo.loops["mouth"])
    upper_inner, lower_inner = split_loop(tuple(mouth), 78, 308)
    if T.UPPER_LIP_INNER not in upper_inner:
        upper_inner, lower_inner = lower_inner, upper_inner
    outer_lower = [146, 91, 181, 84, 17, 314, 405, 321, 375]
    outer_upper = [185, 40, 39, 37, 0, 267, 269, 270, 409]
    corners = [61, 291, 78, 308]
    y_corner = 0.5 * (face[61, 1] + face[291, 1])
    y_centre = 0.5 * (face[13, 1] + face[14, 1])
    x_corner = 0.5 * abs(face[291, 0] - face[61, 0])
    x = face[:, 0]
    rel = np.clip(1 - (x / max(x_corner, 1e-6)) ** 2, 0, 1)
    y_line = y_corner + (y_centre - y_corner) * rel
    h = max(y_line.max() - face[T.CHIN, 1], 1e-6)
    s = (y_line - face[:, 1]) / h
    w = smoothstep(0.0, 0.35, s) * (1 - smoothstep(0.6, 1.0, np.abs(x) / (0.5 * W)))
    fixed = np.zeros(len(face), dtype=bool)
    for v in lower_inner + outer_lower:
        w[v], fixed[v] = 1.0, True
    for v in upper_inner + outer_upper:
        w[v], fixed[v] = 0.0, True
    for v in corners:
        w[v], fixed[v] = 0.5, True
    # Vertices far above the mouth never move with the jaw.
    above = face[:, 1] > y_corner + 0.1 * W
    w[above], fixed[above] = 0.0, True
    return np.clip(laplacian_smooth(w, face_tris, fixed, iterations=8), 0, 1)


def expression_blendshapes(
    num_vertices: int,
    face: np.ndarray,
    W: float,
    eyes: dict[str, Eyeball],
    lip_followers: list[tuple[list[int], float]],
) -> np.ndarray:
    """Displacement fields [E, V, 3] for EXPRESSION_NAMES (in metres at magnitude 1).

    face: [468, 3], the rig's first vertices. lip_followers: (ring, fade) pairs, each ring a
    vertex per mouth-loop vertex (in loop order) that moves with its lip vertex times fade.
    Every other added vertex (skull, body, teeth, tongue, backdrop) gets no displacement.
    """
    topo = T.facemesh_topology()
    E = len(EXPRESSION_NAMES)
    n_face = len(face)
    out = np.zeros((E, num_vertices, 3))
    fv = face

    def field(ctrl: list[int], disp: np.ndarray, radius: float, envelope: float) -> np.ndarray:
        d = np.zeros((num_vertices, 3))
        d[:n_face] = _shepard_field(fv, fv[ctrl], disp, radius * W, envelope * W)
        d[ctrl] = disp
        return d

    upper_lip_outer = [185, 40, 39, 37, 0, 267, 269, 270, 409]
    lower_lip_outer = [146, 91, 181, 84, 17, 314, 405, 321, 375]
    upper_lip_inner = [191, 80, 81, 82, 13, 312, 311, 310, 415]
    lower_lip_inner = [95, 88, 178, 87, 14, 317, 402, 318, 324]
    lip_centre = [0, 13, 14, 17]
    right_c, left_c = [61, 78], [291, 308]
    mouth_c = face[lip_centre].mean(0)

    # jaw_open (index 0): the jaw joint does the work; relax the lips slightly forward.
    ctrl = lower_lip_outer + upper_lip_outer
    out[0] = field(ctrl, np.tile([0.0, 0.0, 0.01 * W], (len(ctrl), 1)), 0.08, 0.12)

    # smile: corners up, out and back; cheeks lift a little; lip centre pinned.
    ctrl = right_c + left_c + lip_centre + [50, 280]
    disp = np.array(
        [[-0.06, 0.07, -0.03]] * 2 + [[0.06, 0.07, -0.03]] * 2 + [[0.0, 0.0, 0.0]] * 4 + [[0.0, 0.025, 0.0]] * 2
    ) * W
    out[1] = field(ctrl, disp, 0.1, 0.22)

    # frown: corners down and slightly in.
    disp = np.array([[0.01, -0.06, 0.0]] * 2 + [[-0.01, -0.06, 0.0]] * 2 + [[0.0, 0.0, 0.0]] * 4 + [[0.0, 0.0, 0.0]] * 2) * W
    out[2] = field(ctrl, disp, 0.1, 0.22)

    # lip_pucker: lips gather towards the centre and push forward.
    ctrl = upper_lip_outer + lower_lip_outer + upper_lip_inner + lower_lip_inner + right_c + left_c
    pts = fv[ctrl]
    disp = np.zeros((len(ctrl), 3))
    disp[:, 0] = -0.4 * (pts[:, 0] - mouth_c[0])
    disp[:, 2] = 0.07 * W
    out[3] = field(ctrl, disp, 0.06, 0.15)

    # lip_stretch: corners out and slightly down, centre pinned.
    ctrl = right_c + left_c + lip_centre
    disp = np.array([[-0.08, -0.01, -0.01]] * 2 + [[0.08, -0.01, -0.01]] * 2 + [[0.0, 0.0, 0.0]] * 4) * W
    out[4] = field(ctrl, disp, 0.1, 0.2)

    # blinks: the upper lid slides onto the lower lid; eyeball pushed back under the closed lid.
    for slot, side, corners in ((5, "left", (263, 362)), (6, "right", (33, 133))):
        loop = tuple(eyes[side].loop)
        path1, path2 = split_loop(loop, *corners)
        upper, lower = (path1, path2) if fv[path1, 1].mean() > fv[path2, 1].mean() else (path2, path1)
        s_up, s_lo = arc_param(fv[upper]), arc_param(fv[lower])
        target = np.stack([np.interp(s_up, s_lo, fv[lower, k]) for k in range(3)], -1)
        # close slightly above the lower lid so the lid does not sink into it
        target[:, 1] += 0.15 * (fv[upper, 1] - target[:, 1])
        ctrl = upper[1:-1] + lower
        disp = np.concatenate([(target - fv[upper])[1:-1], np.zeros((len(lower), 3))])
        out[slot] = field(ctrl, disp, 0.035, 0.09)
        for vi in eyes[side].ring + [eyes[side].apex]:
            out[slot, vi] = [0.0, 0.0, -0.006]

    # brow_raise: brows and forehead up, upper lids follow a little.
    brows = topo.part_vertices("left_eyebrow") + topo.part_vertices("right_eyebrow")
    lids = [159, 158, 160, 386, 385, 387]
    lower_lids = [145, 374, 153, 380]
    ctrl = brows + lids + lower_lids
    disp = np.concatenate(
        [np.tile([0.0, 0.07 * W, 0.0], (len(brows), 1)), np.tile([0.0, 0.012 * W, 0.0], (len(lids), 1)), np.zeros((len(lower_lids), 3))]
    )
    out[7] = field(ctrl, disp, 0.09, 0.25)

    # brow_frown: inner brows down and together, outer brows barely move.
    inner_r, inner_l = [55, 65, 107, 66], [285, 295, 336, 296]
    outer = [46, 53, 276, 283]
    ctrl = inner_r + inner_l + outer
    disp = np.array([[0.03, -0.04, 0.005]] * 4 + [[-0.03, -0.04, 0.005]] * 4 + [[0.0, -0.008, 0.0]] * 4) * W
    out[8] = field(ctrl, disp, 0.07, 0.15)

    # The mouth cavity follows its lip vertex, fading with depth.
    mouth_loop = list(topo.loops["mouth"])
    for e in range(E):
        lip_d = out[e, mouth_loop]
        for idx, fade in lip_followers:
            out[e, idx] = lip_d * fade
    return out


def _shepard_field(
    verts: np.ndarray,
    control_pts: np.ndarray,
    control_disp: np.ndarray,
    radius: float,
    envelope: float,
) -> np.ndarray:
    """Smooth displacement field: Gaussian-weighted average of control displacements.

    The average (not a sum) keeps the field exact-ish near dense controls; the envelope makes it
    vanish away from every control, so a local expression stays local.
    """
    d2 = ((verts[:, None, :] - control_pts[None, :, :]) ** 2).sum(-1)  # [V, C]
    w = np.exp(-d2 / radius**2)
    avg = (w[..., None] * control_disp[None]).sum(1) / w.sum(1, keepdims=True).clip(1e-12)
    env = np.exp(-d2.min(1) / envelope**2)
    return avg * env[:, None]
