"""Optional model asset: MediaPipe's selfie-segmentation model, taken from its PyPI wheel.

The best weight-free-to-ship person mask we can get offline is MediaPipe's Apache-2.0
``selfie_segmentation.tflite`` (250 KB). Model hubs are unreachable on the machines this project
targets, but the package registry is not, and mediapipe==0.10.21 is the last wheel that still
carries its ``.tflite`` files. mediapipe itself cannot be installed beside NumPy 2, so we never
install it: ``pip download`` fetches the wheel (a zip), and only the model and the wheel's
LICENSE are extracted into ``<project>/.assets/mediapipe``, atomically, with the wheel's sha256
recorded in ``manifest.json``. Without the asset, masking falls back to GrabCut.

``python -m zero1toa.preprocess.assets`` runs this from the setup script.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from zero1toa.env import project_root
from zero1toa.utils.io import atomic_dir, read_json, sha256_bytes, sha256_file, write_json_atomic

__all__ = [
    "MEDIAPIPE_SPEC",
    "SELFIE_MEMBER",
    "SELFIE_FILE",
    "default_assets_dir",
    "selfie_model_path",
    "ensure_mediapipe_assets",
    "main",
]

logger = logging.getLogger("zero1toa.preprocess")

MEDIAPIPE_SPEC = "mediapipe==0.10.21"
SELFIE_MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
SELFIE_FILE = "selfie_segmentation.tflite"
LICENSE_FILE = "LICENSE"
MANIFEST_FILE = "manifest.json"
_PIP_ARGS = ["--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
_DOWNLOAD_TIMEOUT_S = 600
# Digest of selfie_segmentation.tflite in mediapipe 0.10.21 (cp311 manylinux_2_28 wheel); a
# different file still works but is logged, since masks would then differ from ours.
KNOWN_SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"


def default_assets_dir() -> Path:
    return project_root() / ".assets" / "mediapipe"


def selfie_model_path(dest: Path | None = None) -> Path | None:
    """The extracted selfie model if present and intact (digest matches its manifest), else None.

    Never downloads: this is what the masking code calls at run time.
    """
    dest = Path(dest) if dest is not None else default_assets_dir()
    model, manifest = dest / SELFIE_FILE, dest / MANIFEST_FILE
    if not (model.is_file() and manifest.is_file()):
        return None
    try:
        expected = read_json(manifest)["files"][SELFIE_FILE]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model if sha256_file(model) == expected else None


def _download_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", *_PIP_ARGS, MEDIAPIPE_SPEC, "-d", str(tmp), "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`pip download {MEDIAPIPE_SPEC}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    wheels = sorted(tmp.glob("mediapipe-*.whl"))
    if not wheels:
        raise RuntimeError(f"`pip download {MEDIAPIPE_SPEC}` produced no wheel in {tmp}")
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    """Copy the model and the wheel's LICENSE out of ``wheel`` into ``dest`` (atomically)."""
    wheel_sha = sha256_file(wheel)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if SELFIE_MEMBER not in names:
            raise RuntimeError(f"{wheel.name} does not contain {SELFIE_MEMBER}")
        licenses = [n for n in names if n.endswith(".dist-info/LICENSE") or n.endswith(".dist-info/LICENSE.txt")]
        licenses += [n for n in names if n.split("/")[-1].startswith("LICENSE") and ".dist-info/" in n and n not in licenses]
        if not licenses:
            raise RuntimeError(f"{wheel.name} has no LICENSE file in its .dist-info; refusing to copy the model without it")
        model_bytes = zf.read(SELFIE_MEMBER)
        license_bytes = zf.read(licenses[0])
    if sha256_bytes(model_bytes) != KNOWN_SELFIE_SHA256:
        logger.warning("%s: %s differs from the known %s model (sha256 %s); using it anyway",
                       wheel.name, SELFIE_MEMBER, MEDIAPIPE_SPEC, sha256_bytes(model_bytes)[:12])
    with atomic_dir(dest) as tmp:
        (tmp / SELFIE_FILE).write_bytes(model_bytes)
        (tmp / LICENSE_FILE).write_bytes(license_bytes)
        write_json_atomic(tmp / MANIFEST_FILE, {
            "source": MEDIAPIPE_SPEC,
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha,
            "license": "Apache-2.0 (see LICENSE, copied from the wheel's " + licenses[0] + ")",
            "files": {
                SELFIE_FILE: {"member": SELFIE_MEMBER, "sha256": sha256_bytes(model_bytes), "bytes": len(model_bytes)},
                LICENSE_FILE: {"member": licenses[0], "sha256": sha256_bytes(license_bytes)},
            },
        })
        # mkdtemp/mkstemp create private modes; the assets are meant to be shared read-only.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)


def ensure_mediapipe_assets(dest: Path | None = None, allow_download: bool = True, wheel: Path | None = None) -> Path | None:
    """Make sure ``dest`` holds the selfie-segmentation model; return ``dest`` or None.

    Order: an intact existing extraction is reused; else the given ``wheel`` is used; else, if
    ``allow_download``, the wheel is fetched with ``pip download`` into a temporary folder.
    Returns None (and logs why) when none of that works; callers then fall back to GrabCut.
    """
    dest = Path(dest) if dest is not None else default_assets_dir()
    if selfie_model_path(dest) is not None:
        return dest
    try:
        if wheel is not None:
            wheel = Path(wheel)
            if not wheel.is_file():
                raise RuntimeError(f"wheel not found: {wheel}")
            _extract(wheel, dest)
        elif allow_download:
            with tempfile.TemporaryDirectory(prefix="zero1toa-mediapipe-") as tmp:
                _extract(_download_wheel(Path(tmp)), dest)
        else:
            logger.info("selfie-segmentation model not present in %s and downloading is disabled", dest)
            return None
    except (OSError, RuntimeError, zipfile.BadZipFile, subprocess.TimeoutExpired) as e:
        logger.warning("cannot provide the MediaPipe selfie-segmentation model in %s: %s (masks fall back to GrabCut)", dest, e)
        return None
    if selfie_model_path(dest) is None:
        logger.warning("extracted selfie-segmentation model in %s failed its digest check", dest)
        return None
    logger.info("selfie-segmentation model ready in %s", dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """CLI: extract the selfie-segmentation model. Exit 0 when ready, 2 when unavailable."""
    parser = argparse.ArgumentParser(prog="python -m zero1toa.preprocess.assets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=None, help="target folder (default: <project>/.assets/mediapipe)")
    parser.add_argument("--wheel", type=Path, default=None, help=f"use this {MEDIAPIPE_SPEC} wheel instead of downloading")
    parser.add_argument("--no-download", action="store_true", help="never run pip download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = ensure_mediapipe_assets(args.dest, allow_download=not args.no_download, wheel=args.wheel)
    if out is None:
        print("selfie-segmentation model unavailable; foreground masks will use GrabCut", file=sys.stderr)
        return 2
    print(out / SELFIE_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
