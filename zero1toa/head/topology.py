"""MediaPipe 468-point face mesh topology (triangles, parts, boundary loops).

Loaded once from ``zero1toa/data/facemesh_topology.json`` (derived from MediaPipe's Apache-2.0
edge lists, see ``zero1toa/data/NOTICE.md``). Used by the built-in rig (triangles, eye and
mouth openings, face outline), the landmark-map drawer (parts and their colours), and fitting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

NUM_FACEMESH = 468
NUM_WITH_IRIS = 478

#: Landmark numbers with a fixed anatomical meaning, used across the project.
NOSE_TIP = 1
FOREHEAD_TOP = 10
CHIN = 152
MOUTH_CORNER_RIGHT = 61  # subject's right (image left in a frontal photo)
MOUTH_CORNER_LEFT = 291
EYE_OUTER_RIGHT, EYE_INNER_RIGHT = 33, 133
EYE_OUTER_LEFT, EYE_INNER_LEFT = 263, 362
CHEEK_RIGHT, CHEEK_LEFT = 234, 454  # face outline at the ears
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
IRIS_CENTER_RIGHT, IRIS_CENTER_LEFT = 468, 473

#: (subject's left, subject's right) pairs used to find the face's mirror plane.
SYMMETRIC_PAIRS: tuple[tuple[int, int], ...] = (
    (263, 33),
    (362, 133),
    (291, 61),
    (454, 234),
    (300, 70),
    (334, 105),
    (389, 162),
    (397, 172),
    (386, 159),
    (374, 145),
)


@dataclass(frozen=True)
class FaceMeshTopology:
    triangles: tuple[tuple[int, int, int], ...]  # [852] consistently wound
    parts: dict[str, tuple[tuple[int, int], ...]]  # edge lists per part (lips, left_eye, ...)
    loops: dict[str, tuple[int, ...]]  # ordered boundary loops: face_oval, left_eye, right_eye, mouth

    def part_vertices(self, name: str) -> list[int]:
        return sorted({v for e in self.parts[name] for v in e})


@lru_cache(maxsize=1)
def facemesh_topology() -> FaceMeshTopology:
    text = resources.files("zero1toa.data").joinpath("facemesh_topology.json").read_text()
    data = json.loads(text)
    return FaceMeshTopology(
        triangles=tuple(tuple(t) for t in data["triangles"]),
        parts={k: tuple(tuple(e) for e in v) for k, v in data["parts"].items()},
        loops={k: tuple(v) for k, v in data["boundary_loops"].items()},
    )
