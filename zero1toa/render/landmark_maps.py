"""Landmark maps: the conditioning images of landmark-driven portrait video generators.

Three styles, chosen by the generator (``GeneratorInfo.landmark_style``):

- ``"project"``: the project's own maps (below), for the embedded generator and our tests;
- ``"mediapipe_face"``: pixel-exact to the annotator a pretrained MediaPipe-face ControlNet was
  trained on (controlnet_aux's ``mediapipe_face_common``): see :func:`draw_annotator_maps`;
- ``"aniportrait"``: pixel-exact to AniPortrait's ``FaceMeshVisualizer`` (its pose images): see
  :func:`draw_aniportrait_maps`.

A map draws a head model's 468-point face-mesh landmarks (and iris points when present),
projected by a camera, as coloured contours on black: face outline, brows, eyes with pupils,
nose, outer and inner lips, one colour per part ("expression-aware" style of Follow-Your-Emoji /
the MediaPipe-face ControlNet annotator). Landmarks hidden behind the head (the far eye in a
side view) are dropped, using the head mesh's z-buffer, so maps of side views look like what a
face-mesh detector would report.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..head import topology as T
from .camera import Cameras, project_points
from .mesh_raster import rasterize_mesh

#: Part -> RGB colour (0-255). Distinct hues so a generator can tell the parts apart.
PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "face_oval": (230, 230, 230),
    "left_eyebrow": (255, 200, 0),
    "right_eyebrow": (0, 200, 255),
    "left_eye": (0, 255, 60),
    "right_eye": (255, 40, 40),
    "nose": (200, 100, 255),
    "lips_outer": (255, 80, 160),
    "lips_inner": (255, 180, 80),
}
PUPIL_COLOUR = (255, 255, 255)

_OUTER_LIPS = {61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409}


def _part_edges() -> dict[str, list[tuple[int, int]]]:
    topo = T.facemesh_topology()
    parts: dict[str, list[tuple[int, int]]] = {}
    for name in ("face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose"):
        parts[name] = [tuple(e) for e in topo.parts[name]]
    lips = [tuple(e) for e in topo.parts["lips"]]
    parts["lips_outer"] = [e for e in lips if e[0] in _OUTER_LIPS and e[1] in _OUTER_LIPS]
    parts["lips_inner"] = [e for e in lips if not (e[0] in _OUTER_LIPS and e[1] in _OUTER_LIPS)]
    return parts


def landmark_visibility(
    landmarks: Tensor,
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    tolerance: float = 0.004,
    max_size: int = 256,
) -> Tensor:
    """Which landmarks [C, L, 3] are unoccluded by the mesh (vertices [C, V, 3]) -> [C, L] bool.

    The z-buffer is drawn at most ``max_size`` pixels wide: an occlusion test at a landmark
    needs no more, and at 512 px it was a third of a generation's cost.
    """
    if max(cameras.width, cameras.height) > max_size:
        k = max_size / max(cameras.width, cameras.height)
        cameras = cameras.resized(max(1, round(cameras.width * k)), max(1, round(cameras.height * k)))
    frags = rasterize_mesh(vertices, faces, cameras)
    uv, depth = project_points(landmarks, cameras)
    C, H, W = frags.depth.shape
    px = uv[..., 0].floor().long()
    py = uv[..., 1].floor().long()
    inside = (px >= 0) & (px < W) & (py >= 0) & (py < H) & (depth > 0)
    zbuf = frags.depth[torch.arange(C)[:, None], py.clamp(0, H - 1), px.clamp(0, W - 1)]
    return inside & (depth <= zbuf + tolerance)


def draw_landmark_maps(
    landmarks: Tensor,
    landmark_ids: Tensor,
    cameras: Cameras,
    visibility: Tensor | None = None,
    thickness: int | None = None,
) -> Tensor:
    """Draw one map per camera.

    landmarks: [C, L, 3] world positions (rows named by ``landmark_ids`` [L] in the 478 order).
    visibility: optional [C, L] bool (see :func:`landmark_visibility`).
    Returns [C, 3, H, W] float in [0, 1].
    """
    import cv2

    C, H, W = len(cameras), cameras.height, cameras.width
    uv, depth = project_points(landmarks, cameras)
    uv = uv.detach().cpu().numpy()
    vis = (depth > 0).cpu().numpy() if visibility is None else (visibility & (depth > 0)).cpu().numpy()
    row_of = {int(i): r for r, i in enumerate(landmark_ids.tolist())}
    th = thickness or max(1, round(min(H, W) / 200))
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = 1 << shift
    parts = _part_edges()
    out = np.zeros((C, H, W, 3), np.uint8)
    for c in range(C):
        img = out[c]
        for part, edges in parts.items():
            colour = PART_COLOURS[part]
            for a, b in edges:
                ra, rb = row_of.get(a), row_of.get(b)
                if ra is None or rb is None or not (vis[c, ra] and vis[c, rb]):
                    continue
                p0 = tuple(int(round(v * scale)) for v in uv[c, ra])
                p1 = tuple(int(round(v * scale)) for v in uv[c, rb])
                cv2.line(img, p0, p1, colour, th, cv2.LINE_AA, shift)
        for centre in (T.IRIS_CENTER_RIGHT, T.IRIS_CENTER_LEFT):
            rc = row_of.get(centre)
            if rc is None or not vis[c, rc]:
                continue
            ring = [row_of[i] for i in range(centre + 1, centre + 5) if i in row_of]
            radius = float(np.mean([np.linalg.norm(uv[c, r] - uv[c, rc]) for r in ring])) if ring else 2.0 * th
            cv2.circle(img, tuple(int(round(v * scale)) for v in uv[c, rc]), max(1, int(round(radius * 0.55 * scale))), PUPIL_COLOUR, -1, cv2.LINE_AA, shift)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


#: The MediaPipe-face annotator's drawing, as the *final RGB* image holds it. Its DrawingSpec
#: colours are written into a canvas mediapipe treats as BGR and the channels are reversed at the
#: end, so e.g. the right eye's spec (10, 200, 180) lands as RGB (180, 200, 10). Parts in drawing
#: order; "left"/"right" are the subject's (MediaPipe's naming); no nose, lips in one colour.
ANNOTATOR_PARTS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("face_oval", (10, 200, 10)),
    ("left_eye", (180, 200, 10)[::-1]),
    ("left_eyebrow", (180, 220, 10)[::-1]),
    ("right_eye", (10, 200, 180)[::-1]),
    ("right_eyebrow", (10, 220, 180)[::-1]),
    ("lips", (10, 180, 10)),
)
#: Pupils: a 4 x 4 square at the iris centres (468 right, 473 left) after the lines.
ANNOTATOR_PUPILS: dict[int, tuple[int, int, int]] = {T.IRIS_CENTER_RIGHT: (10, 200, 250)[::-1], T.IRIS_CENTER_LEFT: (250, 200, 10)[::-1]}
ANNOTATOR_THICKNESS = 2  # cv2.line thickness, 8-connected, no anti-aliasing, integer pixels
ANNOTATOR_PUPIL_HALFWIDTH = 2


def draw_annotator_maps(landmarks: Tensor, landmark_ids: Tensor, cameras: Cameras) -> Tensor:
    """Maps drawn exactly as controlnet_aux's MediaPipe-face annotator draws detected landmarks.

    Its conventions: black canvas; each connection of the six parts a ``cv2.line`` of thickness 2
    (``LINE_8``) between integer pixels ``min(floor(x * W), W - 1)`` (a landmark's normalised x
    times the width; our projections are already in pixels with the same convention); every
    landmark drawn whether or not it is hidden (a face-mesh detector reports all 478); pupils as
    squares ``[y-2:y+2, x-2:x+2]``. -> [C, 3, H, W] float in [0, 1].
    """
    import cv2

    C, H, W = len(cameras), cameras.height, cameras.width
    uv, depth = project_points(landmarks, cameras)
    uv = uv.detach().cpu().numpy()
    front = (depth > 0).cpu().numpy()
    row_of = {int(i): r for r, i in enumerate(landmark_ids.tolist())}
    topo = T.facemesh_topology()
    out = np.zeros((C, H, W, 3), np.uint8)

    def pixel(c: int, r: int) -> tuple[int, int]:
        x, y = uv[c, r]
        return min(int(np.floor(x)), W - 1), min(int(np.floor(y)), H - 1)

    for c in range(C):
        img = out[c]
        for part, colour in ANNOTATOR_PARTS:
            for a, b in topo.parts[part]:
                ra, rb = row_of.get(a), row_of.get(b)
                if ra is None or rb is None or not (front[c, ra] and front[c, rb]):
                    continue
                cv2.line(img, pixel(c, ra), pixel(c, rb), colour, ANNOTATOR_THICKNESS)
        for centre, colour in ANNOTATOR_PUPILS.items():
            r = row_of.get(centre)
            if r is None or not front[c, r]:
                continue
            x, y = uv[c, r]
            if not (0 <= x < W and 0 <= y < H):
                continue
            xi, yi, hw = int(x), int(y), ANNOTATOR_PUPIL_HALFWIDTH
            img[max(0, yi - hw) : yi + hw, max(0, xi - hw) : xi + hw] = colour
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


#: AniPortrait's pose images (``src/utils/draw_util.py``, ``FaceMeshVisualizer(forehead_edge=False)``):
#: parts in drawing order with their DrawingSpec colours, which land in the image's channels as
#: written (its scripts hand that array to the pose guider unchanged). No forehead, nose, irises
#: or pupils; the lips in eight coloured pieces; the face oval a custom jaw-line list.
ANIPORTRAIT_FACE_OVAL: tuple[tuple[int, int], ...] = (
    (176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389), (132, 93), (389, 356),
    (400, 377), (136, 172), (377, 152), (323, 361), (172, 58), (454, 323), (365, 379), (379, 378), (148, 176),
    (93, 234), (397, 365), (149, 150), (288, 397), (234, 127), (378, 400), (127, 162), (162, 21),
)  # fmt: skip
ANIPORTRAIT_LIPS: tuple[tuple[tuple[int, int, int], tuple[tuple[int, int], ...]], ...] = (
    ((10, 180, 20), ((61, 146), (146, 91), (91, 181), (181, 84), (84, 17))),  # outer bottom left
    ((20, 10, 180), ((17, 314), (314, 405), (405, 321), (321, 375), (375, 291))),  # outer bottom right
    ((100, 100, 30), ((78, 95), (95, 88), (88, 178), (178, 87), (87, 14))),  # inner bottom left
    ((100, 150, 50), ((14, 317), (317, 402), (402, 318), (318, 324), (324, 308))),  # inner bottom right
    ((20, 80, 100), ((61, 185), (185, 40), (40, 39), (39, 37), (37, 0))),  # outer top left
    ((80, 100, 20), ((0, 267), (267, 269), (269, 270), (270, 409), (409, 291))),  # outer top right
    ((120, 100, 200), ((78, 191), (191, 80), (80, 81), (81, 82), (82, 13))),  # inner top left
    ((150, 120, 100), ((13, 312), (312, 311), (311, 310), (310, 415), (415, 308))),  # inner top right
)
ANIPORTRAIT_PARTS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("left_eye", (180, 200, 10)),
    ("left_eyebrow", (180, 220, 10)),
    ("right_eye", (10, 200, 180)),
    ("right_eyebrow", (10, 220, 180)),
)
ANIPORTRAIT_OVAL_COLOUR = (10, 200, 10)
ANIPORTRAIT_CANVAS = 512  # it always draws on a 512 x 512 canvas, then resizes to the frame size
ANIPORTRAIT_THICKNESS = 2


def _aniportrait_edges() -> list[tuple[tuple[int, int], tuple[int, int, int]]]:
    """(edge, colour) in AniPortrait's drawing order (the insertion order of its spec dict)."""
    topo = T.facemesh_topology()
    edges = [(e, ANIPORTRAIT_OVAL_COLOUR) for e in ANIPORTRAIT_FACE_OVAL]
    for part, colour in ANIPORTRAIT_PARTS:
        edges += [(tuple(e), colour) for e in topo.parts[part]]
    for colour, lip_edges in ANIPORTRAIT_LIPS:
        edges += [(e, colour) for e in lip_edges]
    return edges


def draw_aniportrait_maps(landmarks: Tensor, landmark_ids: Tensor, cameras: Cameras) -> Tensor:
    """Maps drawn exactly as AniPortrait draws the landmarks of its pose videos -> [C, 3, H, W] in [0, 1].

    Its conventions (``FaceMeshVisualizer.draw_landmarks`` with mediapipe's ``draw_landmarks``):
    landmarks normalised by the frame size (float32, as mediapipe's protobuf holds them); each
    drawn on a black 512 x 512 canvas at ``min(floor(x * 512), 511)``, dropped when outside [0, 1];
    every connection whose two ends are kept a ``cv2.line`` of thickness 2 (8-connected, integer
    pixels) in its part's colour; every landmark drawn whether or not the head hides it (a face
    mesh detector reports all of them); then ``cv2.resize`` (bilinear) to the frame size.
    """
    import math

    import cv2

    C, H, W, S = len(cameras), cameras.height, cameras.width, ANIPORTRAIT_CANVAS
    uv, depth = project_points(landmarks, cameras)
    norm = (uv.detach().cpu().float() / torch.tensor([W, H], dtype=torch.float32)).numpy().astype(np.float32)
    front = (depth > 0).cpu().numpy()
    row_of = {int(i): r for r, i in enumerate(landmark_ids.tolist())}
    edges = _aniportrait_edges()

    def valid(v: float) -> bool:
        return (v > 0 or math.isclose(0, v)) and (v < 1 or math.isclose(1, v))

    out = np.zeros((C, H, W, 3), np.uint8)
    for c in range(C):
        pixel: dict[int, tuple[int, int]] = {}
        for idx, r in row_of.items():
            x, y = float(norm[c, r, 0]), float(norm[c, r, 1])
            if front[c, r] and valid(x) and valid(y):
                pixel[idx] = (min(math.floor(x * S), S - 1), min(math.floor(y * S), S - 1))
        canvas = np.zeros((S, S, 3), np.uint8)
        for (a, b), colour in edges:
            if a in pixel and b in pixel:
                cv2.line(canvas, pixel[a], pixel[b], colour, ANIPORTRAIT_THICKNESS)
        out[c] = cv2.resize(canvas, (W, H))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


LANDMARK_STYLES = ("project", "mediapipe_face", "aniportrait")


def head_landmark_maps(head, vertices: Tensor, cameras: Cameras, occlusion: bool = True, style: str = "project") -> Tensor:
    """Landmark maps of animated head vertices [C, V, 3] seen by ``cameras`` -> [C, 3, H, W]."""
    lmk = head.landmarks(vertices)
    if style == "mediapipe_face":
        return draw_annotator_maps(lmk, head.landmark_embedding.indices, cameras)
    if style == "aniportrait":
        return draw_aniportrait_maps(lmk, head.landmark_embedding.indices, cameras)
    if style != "project":
        raise ValueError(f"unknown landmark map style {style!r}; known: {', '.join(LANDMARK_STYLES)}")
    vis = landmark_visibility(lmk, vertices, head.faces, cameras) if occlusion else None
    return draw_landmark_maps(lmk, head.landmark_embedding.indices, cameras, vis)


def maps_from_points(points: Tensor, landmark_ids: Tensor, size: int, style: str = "project") -> Tensor:
    """Maps of landmarks already in pixels (e.g. extracted from generated frames): points
    [C, L, 2] -> [C, 3, size, size]. Nothing is hidden (no mesh to occlude with)."""
    pts = torch.cat([points.float(), torch.ones(*points.shape[:2], 1)], -1)  # (u, v, 1) seen by ...
    cams = Cameras(torch.eye(4)[None].expand(len(points), 4, 4).clone(), torch.eye(3)[None].expand(len(points), 3, 3).clone(), size, size)  # ... a camera mapping it to (u, v)
    if style == "mediapipe_face":
        return draw_annotator_maps(pts, landmark_ids, cams)
    if style == "aniportrait":
        return draw_aniportrait_maps(pts, landmark_ids, cams)
    return draw_landmark_maps(pts, landmark_ids, cams)
