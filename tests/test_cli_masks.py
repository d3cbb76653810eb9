"""Region and protect masks in the CLI (issue 27 item 8), as the nodes' region_mask and protect_mask inputs: a folder
of masks named like the inputs, or one mask for all; any size; an input without its mask is skipped."""

from __future__ import annotations

import cv2
import numpy as np
from helpers import cmd, face

import cli


def write_mask(path, value: int, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size[1], size[0]), value, np.uint8))
    return path


def pixels(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_region_masks_choose_the_faces_per_input(tmp_path, capsys):
    a, b = face(tmp_path, "a.png"), face(tmp_path, "b.png")
    write_mask(tmp_path / "masks" / "a.png", 0)  # black: no face of a.png is in the region
    write_mask(tmp_path / "masks" / "b.jpg", 255)  # any image suffix, any size: the whole of b.png
    assert cli.main([*cmd(tmp_path, a, b), "--region-masks", str(tmp_path / "masks")]) == 0
    assert "1 restored, 1 unchanged" in capsys.readouterr().out
    out = tmp_path / "out"
    assert (out / "a.png").read_bytes() == a.read_bytes()  # nothing chosen: copied as it is
    assert not np.array_equal(pixels(out / "b.png"), pixels(b))


def test_a_protect_mask_for_all_keeps_the_original_pixels(tmp_path):
    a = face(tmp_path, "a.png")
    assert cli.main([*cmd(tmp_path, a, output=tmp_path / "plain")]) == 0
    assert not np.array_equal(pixels(tmp_path / "plain" / "a.png"), pixels(a))
    keep_all = write_mask(tmp_path / "keep.png", 255, size=(12, 9))  # one small mask, resized to every input
    assert cli.main([*cmd(tmp_path, a), "--protect-masks", str(keep_all)]) == 0
    assert np.array_equal(pixels(tmp_path / "out" / "a.png"), pixels(a))


def test_an_input_without_its_mask_is_skipped_and_the_others_go_on(tmp_path, capsys):
    a, b = face(tmp_path, "a.png"), face(tmp_path, "b.png")
    write_mask(tmp_path / "masks" / "a.png", 255)
    status = cli.main([*cmd(tmp_path, a, b), "--protect-masks", str(tmp_path / "masks")])
    captured = capsys.readouterr()
    assert status == 2
    assert f"no protect mask for b.png in {tmp_path / 'masks'}" in captured.err
    assert (tmp_path / "out" / "a.png").is_file() and not (tmp_path / "out" / "b.png").exists()


def test_a_missing_mask_path_is_refused_before_any_work(tmp_path, capsys):
    a = face(tmp_path, "a.png")
    assert cli.main([*cmd(tmp_path, a), "--region-masks", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --region-masks {tmp_path / 'nowhere'}: no such folder or file"
    assert not (tmp_path / "out").exists()
