"""Regenerate ``zero1toa/data/facemesh_topology.json`` from MediaPipe's Apache-2.0 wheel.

MediaPipe's 468-point face mesh defines its topology only as edge lists inside
``mediapipe/python/solutions/face_mesh_connections.py``. That file is read here as *data*
(``ast`` parsing, never imported or executed), and the triangles of the tesselation are
recovered as the 3-cycles of its edge graph. The result is small, versioned with the code, and
credited in ``zero1toa/data/NOTICE.md``, so no run needs the 35 MB wheel.

Usage: python scripts/extract_mediapipe_assets.py [--wheel PATH]   (downloads
mediapipe==0.10.21 with ``pip download`` from the package registry when no wheel is given)
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from itertools import combinations
from pathlib import Path

WHEEL_SPEC = "mediapipe==0.10.21"
MEMBER = "mediapipe/python/solutions/face_mesh_connections.py"
OUT = Path(__file__).resolve().parents[1] / "zero1toa" / "data" / "facemesh_topology.json"


def download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", WHEEL_SPEC, "-d", str(dest)],
        check=True,
    )
    return next(dest.glob("mediapipe-*.whl"))


def read_edge_sets(source: str) -> dict[str, list[tuple[int, int]]]:
    """Every ``NAME = frozenset([...])`` assignment whose argument is a literal edge list."""
    sets: dict[str, list[tuple[int, int]]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if not (isinstance(call.func, ast.Name) and call.func.id == "frozenset" and call.args):
            continue
        try:
            edges = ast.literal_eval(call.args[0])
        except ValueError:
            continue  # unions of other sets: derived, not needed
        sets[node.targets[0].id] = sorted({tuple(sorted(e)) for e in edges})
    return sets


def _edges_of(tri: tuple[int, int, int]) -> list[tuple[int, int]]:
    a, b, c = tri
    return [(min(a, b), max(a, b)), (min(b, c), max(b, c)), (min(a, c), max(a, c))]


def triangles_from_edges(edges: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    adjacency: dict[int, set[int]] = {}
    for a, b in edges:
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)
    triangles = set()
    for a, neighbours in adjacency.items():
        for b, c in combinations(sorted(n for n in neighbours if n > a), 2):
            if c in adjacency[b]:
                triangles.add((a, b, c))
    return sorted(triangles)


def drop_separating_cycles(triangles: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Remove 3-cycles that are not faces.

    In a manifold triangulation every edge borders at most two faces. A 3-cycle whose three
    edges each border three 3-cycles encloses other faces (a separating triangle): drop it.
    """
    from collections import Counter

    use = Counter(e for t in triangles for e in _edges_of(t))
    return [t for t in triangles if not all(use[e] > 2 for e in _edges_of(t))]


def orient_consistently(triangles: list[tuple[int, int, int]]) -> list[list[int]]:
    """Give every triangle the winding of its neighbours (shared edges run opposite ways).

    The global sign is fixed later, from geometry, by the head rig (normals face outwards).
    """
    by_edge: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(triangles):
        for e in _edges_of(t):
            by_edge.setdefault(e, []).append(i)
    oriented: dict[int, list[int]] = {0: list(triangles[0])}
    queue = [0]
    while queue:
        i = queue.pop()
        a, b, c = oriented[i]
        for u, v in ((a, b), (b, c), (c, a)):
            for j in by_edge[(min(u, v), max(u, v))]:
                if j in oriented:
                    continue
                t = list(triangles[j])
                w = next(x for x in t if x not in (u, v))
                oriented[j] = [v, u, w]  # the shared edge runs v->u in the neighbour
                queue.append(j)
    if len(oriented) != len(triangles):
        raise RuntimeError("face mesh tesselation is not connected")
    return [oriented[i] for i in range(len(triangles))]


def boundary_loops(triangles: list[list[int]]) -> list[list[int]]:
    """Ordered boundary loops (edges used by one triangle), following the triangles' winding."""
    from collections import Counter

    use = Counter(e for t in triangles for e in _edges_of(tuple(t)))
    nxt: dict[int, int] = {}
    for a, b, c in triangles:
        for u, v in ((a, b), (b, c), (c, a)):
            if use[(min(u, v), max(u, v))] == 1:
                nxt[u] = v
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, x = [], start
        while x not in seen:
            seen.add(x)
            loop.append(x)
            x = nxt[x]
        loops.append(loop)
    return loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a local mediapipe 0.10.21 wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read(MEMBER).decode("utf-8")
    sets = read_edge_sets(source)
    tess = sets.pop("FACEMESH_TESSELATION")
    triangles = orient_consistently(drop_separating_cycles(triangles_from_edges(tess)))
    loops = boundary_loops(triangles)
    parts = {name.removeprefix("FACEMESH_").lower(): e for name, e in sets.items()}
    named_loops = {}
    for loop in loops:
        members = set(loop)
        for part in ("face_oval", "left_eye", "right_eye", "lips"):
            part_vertices = {v for e in parts[part] for v in e}
            if members <= part_vertices:
                named_loops["mouth" if part == "lips" else part] = loop
    if sorted(named_loops) != ["face_oval", "left_eye", "mouth", "right_eye"]:
        raise RuntimeError(f"unexpected boundary loops: {[len(l) for l in loops]}")
    payload = {
        "source": f"{WHEEL_SPEC}:{MEMBER} (Apache-2.0, see NOTICE.md)",
        "num_landmarks": 468,
        "tesselation_edges": tess,
        "triangles": triangles,
        "boundary_loops": named_loops,
        "parts": parts,
    }
    OUT.write_text(json.dumps(payload, separators=(",", ":")))
    print(f"wrote {OUT}: {len(tess)} edges, {len(triangles)} triangles, loops { {k: len(v) for k, v in named_loops.items()} }, parts {sorted(payload['parts'])}")


if __name__ == "__main__":
    main()
