"""The output plan knows the real paths (issue 27 item 1): an output or side output that a symbolic link carries into
the input folder is refused; side outputs of a single output file go beside it, and are refused in the input's own
folder; an input subfolder named crops/ or annotated/ is restored like any other; a side output that would be an
output's path is refused naming both."""

from __future__ import annotations

import os

import pytest
from helpers import cmd, face, files_under

import cli

pytestmark = pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
SIDES = ["--save-crops", "--save-annotated", "--save-json"]


@pytest.mark.parametrize("link, flags, refused", [
    ("sub", [], "the output {out}/sub/b.jpg would be written into the input folder {inp} (that is {real})"),
    ("crops", ["--save-crops"], "--save-crops would write {out}/crops (that is {real}) inside the input folder {inp}"),
    ("annotated", ["--save-annotated"],
     "--save-annotated would write {out}/annotated (that is {real}) inside the input folder {inp}"),
    ("faces.json", ["--save-json"],
     "--save-json would write {out}/faces.json (that is {real}/faces.json) inside the input folder {inp}"),
], ids=["subfolder", "crops", "annotated", "json"])
def test_an_output_linked_into_the_input_folder_is_refused(tmp_path, capsys, link, flags, refused):
    face(tmp_path, "a.jpg")
    face(tmp_path, "sub/b.jpg")
    inp, out = tmp_path / "in", tmp_path / "out"
    out.mkdir()
    (out / link).symlink_to(os.path.join("..", "in", *(["faces.json"] if link == "faces.json" else [])))
    before = files_under(inp)
    assert cli.main([*cmd(tmp_path, inp), *flags]) == 2
    err = capsys.readouterr().err
    expected = refused.format(out=out, inp=inp, real=inp.resolve())
    assert err.startswith(f"error: {expected}"), err
    assert err.count("\n") == 1  # one line
    what = "(by this run and the next): remove the link or choose another output folder\n"
    assert err.endswith(what), err
    assert files_under(inp) == before  # nothing written into the input folder
    assert sorted(p.name for p in out.iterdir()) == [link]  # nor anything else: refused before any work


def test_side_outputs_of_a_single_output_file_go_beside_it_never_into_the_photo_folder(tmp_path, capsys):
    photo = face(tmp_path, "a.jpg")
    inp = tmp_path / "in"
    for flag in SIDES:  # each side output alone is refused in the photo's own folder
        assert cli.main([*cmd(tmp_path, photo, output=inp / "a_restored.jpg"), flag]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} would write {inp}/"), err
        assert (f"beside or below {inp.resolve()}, the folder of the input {photo}, where a folder run over it would "
                f"read") in err
        assert err.endswith(f": write the image into another folder (e.g. --output "
                            f"{tmp_path / 'in_restored' / 'a_restored.jpg'}) or leave out {flag}\n"), err
    assert sorted(files_under(inp)) == ["a.jpg"]

    res = tmp_path / "res"
    assert cli.main([*cmd(tmp_path, photo, output=res / "a_restored.jpg"), *SIDES]) == 0, capsys.readouterr().err
    assert sorted(files_under(res)) == ["a_restored.jpg", "annotated/a.jpg.png", "crops/a.jpg_face0_aligned.png",
                                        "crops/a.jpg_face0_restored.png", "faces.json"]
    assert sorted(files_under(inp)) == ["a.jpg"]
    capsys.readouterr()
    assert cli.main(cmd(tmp_path, inp, output=tmp_path / "again")) == 0  # the next folder run: the photo alone
    assert capsys.readouterr().out.startswith("1 image(s): 1 restored, 0 unchanged, 0 skipped, 0 failed")
    assert sorted(files_under(tmp_path / "again")) == ["a.jpg"]


@pytest.mark.parametrize("folder, flag", [("crops", "--save-crops"), ("annotated", "--save-annotated")])
def test_an_input_subfolder_named_like_a_side_output_is_restored(tmp_path, capsys, folder, flag):
    for name in ("a.jpg", f"{folder}/b.jpg", f"{folder}/c.jpg"):
        face(tmp_path, name)
    out = tmp_path / "out"
    assert cli.main([*cmd(tmp_path, tmp_path / "in"), flag]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("3 image(s): 3 restored, 0 unchanged, 0 skipped, 0 failed"), captured.out
    assert "appeared while this run was working" not in captured.err and "kept the existing" not in captured.err
    made = set(files_under(out))
    assert {"a.jpg", f"{folder}/b.jpg", f"{folder}/c.jpg"} <= made  # the photos of the subfolder, restored
    if flag == "--save-crops":  # and the run's own crops of them, under out/crops/crops/
        assert {"crops/a.jpg_face0_restored.png", "crops/crops/b.jpg_face0_restored.png",
                "crops/crops/c.jpg_face0_restored.png"} <= made
    else:
        assert {"annotated/a.jpg.png", "annotated/annotated/b.jpg.png", "annotated/annotated/c.jpg.png"} <= made
    assert cli.main([*cmd(tmp_path, tmp_path / "in"), flag]) == 0  # run again: everything is there
    assert capsys.readouterr().out.startswith("3 image(s): 0 restored, 0 unchanged, 3 skipped, 0 failed")
    assert set(files_under(out)) == made


@pytest.mark.parametrize("name, flag", [
    ("crops/a.jpg_face0_aligned.png", "--save-crops"),
    ("crops/a.jpg_face12_restored.png", "--save-crops"),
    ("annotated/a.jpg.png", "--save-annotated"),
], ids=["aligned-crop", "restored-crop-of-face-12", "preview"])
def test_a_side_output_on_an_output_path_is_refused_naming_both(tmp_path, capsys, name, flag):
    photo = face(tmp_path, "a.jpg")
    other = face(tmp_path, name)
    assert cli.main([*cmd(tmp_path, tmp_path / "in"), flag]) == 2
    assert capsys.readouterr().err == (f"error: {flag} would write a side output of the input {photo} as "
                                       f"{tmp_path / 'out' / name}, the output of the input {other}: rename or move "
                                       f"one of them, or leave out {flag}\n")
    assert not (tmp_path / "out").exists()
    assert cli.main([*cmd(tmp_path, tmp_path / "in"), "--save-json"]) == 0  # no clash without that side output
    assert (tmp_path / "out" / name).is_file()
