"""The mouth interior of the built-in rig: a closed pocket behind the lips, teeth and a tongue.

A face mesh ends at the inner lip loop; an open mouth would otherwise show the back of the head
(or nothing). Behind the loop this module builds what an open mouth shows:

- the cavity: rings swept from the lip loop back to a back wall and closed there, so lip
  loop and cavity together bound a pocket (every cavity edge has two triangles, every lip edge
  one face and one cavity triangle). The rings are wound consistently with the face, so their
  normals face into the pocket, towards the mouth opening. Each ring vertex copies the skinning
  of its lip vertex (upper half the skull, lower half the jaw, corners half and half), so the
  pocket opens with jaw_open like a hinge and never tears from the lips;
- upper teeth: an arch of boxes just behind the upper inner lip, following the lip's curve,
  carried rigidly by the skull (neck joint); lower teeth: a second arch behind the lower lip and
  behind the upper teeth (an overbite), and a tongue on the pocket's floor, both carried
  rigidly by the jaw. Teeth and tongue get no blendshape: expressions never bend them.

Sizes are multiples of the face width W (the rig is scaled so W is ``RigConfig.face_width_m``)
and of the mouth loop's own width and curve. Cavity and teeth are kept a margin behind the
face surface in front of it (along the head's forward axis), so nothing pokes through the lips
or the chin. The reference view shows what the photo shows: a smile's open lips show upper
teeth down to near the lower lip; a closed mouth (whose face mesh still leaves a sliver between
the lips) shows only the dark cavity, the teeth sitting out of the photo's sight lines until
the jaw opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import topology as T
from .rig_mesh import JAW, NECK, RigMesh, jaw_blend_weights, joint_weights, ring_strip, smoothstep, split_loop

#: Cavity rings behind the lip loop: (fraction of the way to the back wall, lateral scale of the
#: lip loop, vertical room above the upper lip and below the lower lip in W, share of the lips'
#: expression displacement). The first ring lines the inside of the lips, the middle ones give
#: teeth and tongue room (wider than the mouth opening, like cheeks), the last is the back
#: wall's rim.
_CAVITY_RINGS: tuple[tuple[float, float, float, float, float], ...] = (
    (0.08, 1.0, 0.06, 0.065, 0.8),
    (0.35, 1.12, 0.09, 0.105, 0.45),
    (0.7, 1.1, 0.09, 0.105, 0.2),
    (1.0, 0.8, 0.05, 0.065, 0.0),
)
_MIN_DEPTH = 0.13  # W: the back wall is at least this far behind every lip vertex (room for the teeth)
_MARGIN = 0.012  # W: interior surfaces stay this far behind the face surface
_TEETH_MARGIN = 0.03  # W: teeth stay further behind it (the lips have thickness)

_INNER_CORNERS = (78, 308)  # the mouth loop's corners: subject's right, left

#: Tooth widths from the midline outwards (central incisor, lateral incisor, canine, two
#: premolars), in millimetres of an average adult; only their ratios are used.
_UPPER_TOOTH_MM = (8.5, 6.5, 7.5, 7.0, 6.5)
_LOWER_TOOTH_MM = (5.0, 5.5, 6.5, 7.0, 7.0)
_ARCH_REACH = 0.88  # the teeth fill this share of the lip curve from the midline to each corner
_TOOTH_GAP = 0.06  # share of each tooth's arch interval left free on each side


@dataclass(frozen=True)
class _Row:
    """One row of teeth seen from above, in W: where its front face is and how thick it is."""

    offset: float  # from the inner lip to the teeth's front face, along the arch's inward normal
    thickness: float


#: The lower row stands behind the upper one (an overbite), so closing the jaw never collides.
_UPPER_ROW = _Row(offset=0.02, thickness=0.035)
_LOWER_ROW = _Row(offset=0.06, thickness=0.03)
#: Vertical extents, in W. What the photo shows decides: a mouth open by more than _GAP_OPEN
#: (a smile showing teeth) gets upper teeth whose edge reaches down to _UPPER_CLEARANCE above
#: the lower lip, as such photos do; a closed one (under _GAP_CLOSED: face meshes rarely close
#: the gap completely) keeps every tooth out of the reference camera's sight lines through the
#: gap, so the photo's dark lip line stays the cavity. In between, the edge blends. The lower
#: teeth always stay out of those sight lines: opening the jaw lifts them into view (they sit
#: nearer the hinge than the lip, so they drop less). Crowns reach up (down) behind the lips.
_GAP_CLOSED, _GAP_OPEN = 0.015, 0.035
_UPPER_CLEARANCE = 0.015
_UPPER_MAX_SHOW = 0.08
_UPPER_HIDDEN = 0.045
_LOWER_HEIGHT = 0.06
_SIGHT_MARGIN = 0.003


@dataclass
class MouthInterior:
    """What the rest of the rig needs to know about the interior.

    lip_followers: the cavity rings (each a vertex per mouth-loop vertex, in loop order), each
    with the share of its lip vertex's expression displacement it follows.
    lip_gap: metres between the inner lips at the midline; about 0 when the photo's mouth is closed.
    """

    lip_followers: list[tuple[list[int], float]]
    lip_gap: float


@dataclass
class _Lips:
    """The inner lip loop, split at the corners, as functions of the lateral position u."""

    loop: list[int]  # the 20 mouth-loop vertices, in loop order
    upper: list[int]  # subject's right corner -> left corner, through the upper inner lip
    lower: list[int]  # the same corners, through the lower inner lip
    side: np.ndarray  # [20] +1 upper lip, -1 lower lip, 0 corner (loop order)
    u: np.ndarray  # [20] lateral position: -1 at the subject's right corner, +1 at the left
    centre_x: float
    half_width: float  # half the corner-to-corner distance along x

    def line(self, path: list[int], face: np.ndarray, u: np.ndarray, axis: int) -> np.ndarray:
        """Coordinate ``axis`` of a lip path at lateral positions u [N] (piecewise linear)."""
        pu = (face[path, 0] - self.centre_x) / self.half_width
        order = np.argsort(pu)
        return np.interp(u, pu[order], face[path, axis][order])


def add_mouth(
    mesh: RigMesh,
    face: np.ndarray,
    face_triangles: np.ndarray,
    W: float,
    face_jaw: np.ndarray,
    depth: float,
    camera_centre: np.ndarray,
) -> MouthInterior:
    """Build cavity, teeth and tongue behind the lips (see the module docstring).

    face: [468, 3] canonical face (the mesh's first vertices); face_triangles: [852, 3] as wound
    in the mesh; face_jaw: [468] the face's jaw weights; depth: metres from the lips' centre to
    the cavity's back wall; camera_centre: [3] the reference camera, whose view of the teeth
    through the lips follows the photo.
    """
    lips = _lips(face)
    mid = face[lips.loop].mean(0)
    ray = mid - camera_centre
    sight = float(ray[1] / max(-ray[2], 1e-9))  # height change per metre of depth behind the lips
    front = _FaceFront(face, face_triangles)
    z_lip = face[lips.loop, 2]  # [20]
    z_back = np.minimum(z_lip.max() - depth, z_lip - _MIN_DEPTH * W)  # [20] the back wall behind each lip vertex
    rings = _add_cavity(mesh, face, face_triangles, lips, front, W, face_jaw, z_back)
    _add_teeth(mesh, face, lips, front, W, sight, "teeth_upper")
    _add_teeth(mesh, face, lips, front, W, sight, "teeth_lower")
    _add_tongue(mesh, face, lips, W, sight, z_back)
    followers = [(ring, share) for ring, (*_, share) in zip(rings, _CAVITY_RINGS)]
    gap = lips.line(lips.upper, face, np.zeros(1), 1) - lips.line(lips.lower, face, np.zeros(1), 1)
    return MouthInterior(followers, float(gap[0]))


def _lips(face: np.ndarray) -> _Lips:
    loop = list(T.facemesh_topology().loops["mouth"])
    upper, lower = split_loop(tuple(loop), *_INNER_CORNERS)
    if T.UPPER_LIP_INNER not in upper:
        upper, lower = lower, upper
    side = np.array([1.0 if v in upper[1:-1] else -1.0 if v in lower[1:-1] else 0.0 for v in loop])
    right, left = face[_INNER_CORNERS[0]], face[_INNER_CORNERS[1]]
    cx = 0.5 * (right[0] + left[0])
    half = max(0.5 * abs(left[0] - right[0]), 1e-6)
    u = np.clip((face[loop, 0] - cx) / half, -1.0, 1.0)
    return _Lips(loop, upper, lower, side, u, float(cx), float(half))


class _FaceFront:
    """Depth of the face surface straight ahead (+z) of points: the interior must stay behind it."""

    def __init__(self, face: np.ndarray, triangles: np.ndarray) -> None:
        self.a, self.b, self.c = (face[triangles[:, k]] for k in range(3))  # [F, 3] each
        e1, e2 = self.b[:, :2] - self.a[:, :2], self.c[:, :2] - self.a[:, :2]
        self.e1, self.e2 = e1, e2
        self.den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # [F] twice the projected area

    def limit(self, points: np.ndarray, margin: float) -> np.ndarray:
        """[N, 3] -> [N] the largest z each point may have: ``margin`` behind the frontmost face
        triangle over its (x, y); +inf where no triangle is (behind the mouth opening, say)."""
        p = points[:, None, :2] - self.a[None, :, :2]  # [N, F, 2]
        ok = np.abs(self.den) > 1e-14
        den = np.where(ok, self.den, 1.0)
        l1 = (p[..., 0] * self.e2[:, 1] - p[..., 1] * self.e2[:, 0]) / den
        l2 = (self.e1[:, 0] * p[..., 1] - self.e1[:, 1] * p[..., 0]) / den
        inside = ok & (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
        z = self.a[:, 2] + l1 * (self.b[:, 2] - self.a[:, 2]) + l2 * (self.c[:, 2] - self.a[:, 2])
        front = np.where(inside, z, -np.inf).max(1)
        return np.where(np.isfinite(front), front - margin, np.inf)

    def push_behind(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Move points back (-z) where they are not at least ``margin`` behind the face surface."""
        out = points.copy()
        out[:, 2] = np.minimum(out[:, 2], self.limit(points, margin))
        return out


def _add_cavity(
    mesh: RigMesh,
    face: np.ndarray,
    face_triangles: np.ndarray,
    lips: _Lips,
    front: _FaceFront,
    W: float,
    face_jaw: np.ndarray,
    z_back: np.ndarray,
) -> list[list[int]]:
    """The pocket: rings from the lip loop to the back wall (z_back [20]: behind each lip vertex), closed there."""
    lip = face[lips.loop]  # [20, 3]
    envelope = np.sqrt(np.clip(1 - lips.u**4, 0, 1))  # [20] vertical room: full mid-mouth, none at the corners
    weights = jaw_blend_weights(face_jaw[lips.loop])  # each ring vertex skinned like its lip vertex
    rings, prev, prev_z, neighbours = [], lips.loop, lip[:, 2], face_triangles.tolist()
    for to_back, lateral, room_up, room_down, _ in _CAVITY_RINGS:
        room = np.where(lips.side > 0, room_up, room_down)  # [20]
        pts = lip.copy()
        pts[:, 0] = lips.centre_x + (lip[:, 0] - lips.centre_x) * lateral
        pts[:, 1] = lip[:, 1] + lips.side * room * W * envelope
        pts[:, 2] = (1 - to_back) * lip[:, 2] + to_back * z_back
        pts = front.push_behind(pts, _MARGIN * W)
        pts[:, 2] = np.minimum(pts[:, 2], prev_z - 0.01 * W)  # each ring strictly deeper than the last
        idx = mesh.add(pts, weights)
        strip = _wound_against(ring_strip(prev, idx), neighbours, _ring_edges(prev))
        mesh.add_faces(strip, "mouth")
        rings.append(idx)
        prev, prev_z, neighbours = idx, pts[:, 2], strip
    # The back wall: zip the last ring's upper half to its lower half.
    pos = {v: k for k, v in enumerate(lips.loop)}
    up = [prev[pos[v]] for v in lips.upper]
    lo = [prev[pos[v]] for v in lips.lower]
    wall = [[up[0], up[1], lo[1]]]
    for j in range(1, len(up) - 2):
        wall += [[up[j], up[j + 1], lo[j + 1]], [up[j], lo[j + 1], lo[j]]]
    wall.append([up[-2], up[-1], lo[-2]])
    mesh.add_faces(_wound_against(wall, neighbours, _ring_edges(prev)), "mouth")
    return rings


def _ring_edges(ring: list[int]) -> set[frozenset[int]]:
    """The undirected edges of a closed ring of vertices."""
    return {frozenset((ring[i], ring[(i + 1) % len(ring)])) for i in range(len(ring))}


def _wound_against(triangles: list[list[int]], neighbours: list[list[int]], shared: set[frozenset[int]]) -> list[list[int]]:
    """``triangles`` wound consistently with ``neighbours`` across their ``shared`` edges.

    Consistent winding runs a shared edge one way in each of its two triangles; the new
    triangles are flipped as a whole if one runs a shared edge like its neighbour does.
    """
    def directed(tris: list[list[int]]) -> set[tuple[int, int]]:
        return {(t[k], t[(k + 1) % 3]) for t in tris for k in range(3) if frozenset((t[k], t[(k + 1) % 3])) in shared}

    if directed(triangles) & directed(neighbours):
        return [[a, c, b] for a, b, c in triangles]
    return triangles


def _add_teeth(mesh: RigMesh, face: np.ndarray, lips: _Lips, front: _FaceFront, W: float, sight: float, part: str) -> None:
    """One row of teeth ("teeth_upper" or "teeth_lower"): boxes along its lip's curve, offset inwards.

    The row follows its inner lip as seen from above (x, z; smoothed), from the midline out to
    ``_ARCH_REACH`` of the way to each corner, tooth widths in anatomical proportions. Each box
    is pushed back as a whole where it would come closer to the face surface than the teeth
    margin, so it stays a box. Upper teeth ride on the skull (neck joint), lower on the jaw.
    """
    upper_row = part == "teeth_upper"
    row, widths_mm = (_UPPER_ROW, _UPPER_TOOTH_MM) if upper_row else (_LOWER_ROW, _LOWER_TOOTH_MM)
    path = lips.upper if upper_row else lips.lower
    # The lip path seen from above, smoothed by a quartic (the loop's kinks would skew the boxes).
    z_of_u = np.polynomial.Polynomial.fit((face[path, 0] - lips.centre_x) / lips.half_width, face[path, 2], 4)
    u = np.linspace(-1.0, 1.0, 201)
    curve = np.stack([lips.centre_x + u * lips.half_width, z_of_u(u)], -1)  # [201, 2] (x, z)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])  # [201] arc length
    mid = np.interp(0.0, u, s)
    ratios = np.array(widths_mm) / np.sum(widths_mm)
    bounds = np.concatenate([[0.0], np.cumsum(ratios)]) * _ARCH_REACH * min(mid, s[-1] - mid)  # from the midline
    weights = joint_weights(NECK if upper_row else JAW)
    for sign in (-1.0, 1.0):
        for s0, s1 in zip(bounds[:-1], bounds[1:]):
            gap = _TOOTH_GAP * (s1 - s0)
            footprint = _footprint(curve, s, mid + sign * np.array([s0 + gap, s1 - gap]), row, W)  # [4, 2] (x, z)
            u_tooth = (footprint[:, 0] - lips.centre_x) / lips.half_width  # [4]
            y0, y1 = _tooth_span(lips, face, u_tooth, row, sight, upper_row, W)
            corners = np.concatenate([_at_height(footprint, y0), _at_height(footprint, y1)])  # [8, 3]
            corners[:, 2] -= max(0.0, np.max(corners[:, 2] - front.limit(corners, _TEETH_MARGIN * W)))
            _add_box(mesh, corners, part, weights)


def _footprint(curve: np.ndarray, s: np.ndarray, ends: np.ndarray, row: _Row, W: float) -> np.ndarray:
    """[4, 2] (x, z) of a tooth between arc lengths ``ends``: front a, front b, back b, back a."""
    front, back = [], []
    for s_end in ends:
        p = np.array([np.interp(s_end, s, curve[:, 0]), np.interp(s_end, s, curve[:, 1])])
        i = int(np.clip(np.searchsorted(s, s_end), 1, len(s) - 1))
        t = (curve[i] - curve[i - 1]) / max(np.linalg.norm(curve[i] - curve[i - 1]), 1e-12)
        inward = np.array([t[1], -t[0]])  # towards the mouth's inside (-z at the midline)
        front.append(p + row.offset * W * inward)
        back.append(p + (row.offset + row.thickness) * W * inward)
    return np.stack([front[0], front[1], back[1], back[0]])


def _tooth_span(
    lips: _Lips, face: np.ndarray, u: np.ndarray, row: _Row, sight: float, upper_row: bool, W: float
) -> tuple[float, float]:
    """(bottom, top) y of a tooth over lateral positions u [N] (see ``_GAP_CLOSED`` and friends).

    sight: the reference camera's rays through the lips change height by this much per metre
    of depth; the tooth spans depths ``row.offset`` to ``row.offset + row.thickness`` behind
    its lip, so the heights those rays reach there bound what the photo can see of it.
    """
    y_up = lips.line(lips.upper, face, u, 1)  # [N]
    y_lo = lips.line(lips.lower, face, u, 1)
    reach = sight * W * np.array([row.offset, row.offset + row.thickness])  # [2] ray height change
    if upper_row:
        hidden = y_up.max() + reach.max() + _SIGHT_MARGIN * W
        shown = max(y_lo.max() + _UPPER_CLEARANCE * W, y_up.min() - _UPPER_MAX_SHOW * W)
        t = float(smoothstep(_GAP_CLOSED * W, _GAP_OPEN * W, np.array((y_up - y_lo).mean())))
        edge = (1 - t) * hidden + t * shown
        return edge, max(y_up.max(), edge) + _UPPER_HIDDEN * W
    top = y_lo.min() + reach.min() - _SIGHT_MARGIN * W
    return top - _LOWER_HEIGHT * W, top


def _at_height(footprint: np.ndarray, y: float) -> np.ndarray:
    """[4, 2] (x, z) -> [4, 3] at height y."""
    return np.stack([footprint[:, 0], np.full(len(footprint), y), footprint[:, 1]], -1)


#: A box's six quads over its corners (bottom 0-3, top 4-7, same order), as two triangles each.
_BOX_QUADS = ((0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))


_BOX_TRIANGLES = np.array([[a, b, c] for a, b, c, _ in _BOX_QUADS] + [[a, c, d] for a, _, c, d in _BOX_QUADS])


def _add_box(mesh: RigMesh, corners: np.ndarray, part: str, weights: np.ndarray) -> None:
    """A closed box over corners [8, 3], wound outwards (checked by its signed volume)."""
    _add_closed(mesh, corners, _BOX_TRIANGLES, part, weights)


def _add_closed(mesh: RigMesh, points: np.ndarray, triangles: np.ndarray, part: str, weights: np.ndarray) -> None:
    """Add a closed, consistently wound surface, flipped if needed so its normals point outwards."""
    if _signed_volume(points, triangles) < 0:
        triangles = triangles[:, [0, 2, 1]]
    idx = mesh.add(points, weights)
    mesh.add_faces((triangles + idx[0]).tolist(), part)


def _signed_volume(points: np.ndarray, triangles: np.ndarray) -> float:
    """Volume enclosed by a closed surface; positive when its triangles are wound outwards."""
    a, b, c = points[triangles[:, 0]], points[triangles[:, 1]], points[triangles[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _add_tongue(mesh: RigMesh, face: np.ndarray, lips: _Lips, W: float, sight: float, z_back: np.ndarray) -> None:
    """A flattened ellipsoid on the pocket's floor, from behind the lower teeth to near the back wall.

    Its top stays below the lower teeth's and, like them, out of the reference camera's sight
    lines through the lips (``sight``, see :func:`_tooth_span`).
    """
    z_lip = float(lips.line(lips.lower, face, np.array([0.0]), 2)[0])
    y_lip = float(lips.line(lips.lower, face, np.array([0.0]), 1)[0])
    tip = z_lip - (_LOWER_ROW.offset + _LOWER_ROW.thickness + 0.005) * W
    back = z_back.max() + 0.012 * W  # the back wall's shallowest point: mid-mouth
    length = max(tip - back, 0.04 * W)
    reach = sight * np.array([z_lip - tip, z_lip - tip + length])  # [2] ray height change over its depth
    top = y_lip + min(-0.015 * W, reach.min() - _SIGHT_MARGIN * W)
    radii = np.array([0.6 * lips.half_width, 0.024 * W, 0.5 * length])
    centre = np.array([lips.centre_x, top - radii[1], tip - radii[2]])
    points, triangles = _ellipsoid(centre, radii, rings=6, segments=12)
    _add_closed(mesh, points, triangles, "tongue", joint_weights(JAW))


def _ellipsoid(centre: np.ndarray, radii: np.ndarray, rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude-longitude ellipsoid with its poles on the z axis: (points [N, 3], triangles [T, 3])."""
    theta = np.linspace(0, np.pi, rings + 2)[1:-1]  # polar angle from the front (+z) pole
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")  # [rings, segments]
    unit = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    points = np.concatenate([[[0.0, 0.0, 1.0]], unit, [[0.0, 0.0, -1.0]]]) * radii + centre
    ring = [list(range(1 + r * segments, 1 + (r + 1) * segments)) for r in range(rings)]
    last = len(points) - 1
    tris = [[0, ring[0][j], ring[0][(j + 1) % segments]] for j in range(segments)]
    for r in range(rings - 1):
        tris += ring_strip(ring[r], ring[r + 1])
    tris += [[last, ring[-1][(j + 1) % segments], ring[-1][j]] for j in range(segments)]
    return points, np.array(tris, dtype=np.int64)
