"""Our AniPortrait modules at full size load AniPortrait's published files: checked without the weights.

``zero1toa/data/aniportrait_manifest.json`` holds the keys and shapes of each published file,
derived from AniPortrait's own model classes outside this repository
(``scripts/derive_aniportrait_manifest.py``). Our modules are built at full size on the meta
device (no memory) and must produce exactly those keys and shapes; a wrong file must fail with
an error that names what differs.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
import torch

from zero1toa.generate.aniportrait.checkpoint import (
    WEIGHT_FILES,
    CheckpointMismatchError,
    compare_state,
    expected_files,
    full_size_arch,
    manifest,
)


@pytest.fixture(scope="module")
def ours():
    return expected_files(full_size_arch())


@pytest.mark.parametrize("stem", WEIGHT_FILES)
def test_full_size_modules_produce_exactly_the_published_keys_and_shapes(ours, stem):
    published = {k: tuple(v) for k, v in manifest()["files"][f"{stem}.pth"].items()}
    assert set(ours[stem]) == set(published), (sorted(set(published) - set(ours[stem]))[:5], sorted(set(ours[stem]) - set(published))[:5])
    assert {k: ours[stem][k] for k in published} == published
    compare_state(f"{stem}.pth", {k: torch.empty(s, device="meta") for k, s in published.items()}, ours[stem])


def test_manifest_records_where_it_came_from():
    m = manifest()
    prov = m["provenance"]
    assert len(prov["aniportrait_commit"]) == 40 and prov["diffusers"] == "0.24.0"
    config = resources.files("zero1toa.data").joinpath("sd15_unet_config.json").read_bytes()
    assert prov["sd15_unet_config_sha256"] == hashlib.sha256(config).hexdigest()
    assert m["counts"] == {f"{s}.pth": len(m["files"][f"{s}.pth"]) for s in WEIGHT_FILES}
    # the published denoising UNet file holds the spatial part only; the motion modules come separately
    assert not any("motion_modules" in k for k in m["files"]["denoising_unet.pth"])
    assert all("motion_modules" in k for k in m["files"]["motion_module.pth"])


def test_a_wrong_file_is_named_with_what_differs(ours):
    good = {k: torch.empty(s, device="meta") for k, s in ours["pose_guider"].items()}
    bad = dict(good)
    dropped = sorted(bad)[:7]
    for k in dropped:
        del bad[k]
    bad["not.a.key"] = torch.empty(3, device="meta")
    bad["scale"] = torch.empty(2, device="meta")
    with pytest.raises(CheckpointMismatchError) as err:
        compare_state("pose_guider.pth", bad, ours["pose_guider"])
    msg = str(err.value)
    assert "pose_guider.pth" in msg and "7 missing keys" in msg and "and 2 more" in msg
    assert "1 unexpected keys: not.a.key" in msg
    assert "1 shape mismatches: scale [2] (expected [1])" in msg
    # another file's state dict entirely: everything is reported, counted
    with pytest.raises(CheckpointMismatchError, match=r"184 missing keys: .*and 179 more; 682 unexpected keys"):
        compare_state("pose_guider.pth", {k: torch.empty(s, device="meta") for k, s in ours["reference_unet"].items()}, ours["pose_guider"])
