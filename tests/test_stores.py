"""Inputs in an object store (face_jobs/stores.py), on moto's S3 server (tests/s3_double.py): a bucket
prefix is listed like a folder, sizes are read from the objects as from the files, an object that cannot be read is
an unreadable input naming it, an output in a store is refused before any work, and the local engine restores from a
bucket the same bytes as from a folder; a URI's credentials are never printed, and reading one without pyarrow says how
to install it. The Ray engine's runs from a bucket are in tests/test_ray_engine.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import files_under, make_photos
from helpers import ray_args as args
from PIL import Image
from s3_double import BUCKET, CREDENTIALS, needs_moto, s3_server, s3_uri

from face_jobs import PlannedOutput, StoreObject, collect_inputs, source_size, staged
from face_jobs.stores import HEADER_BYTES, filesystem, redacted, without_secrets
from face_pipeline.errors import FileLayoutError, InvalidImageError
from face_pipeline.image import image_size


def add_odd_files(folder: Path) -> None:
    """Two JPEGs whose size the first bytes alone do not give right: one turned by its EXIF orientation (6: the
    width and height swap), one whose header (a big ICC profile) is longer than ``HEADER_BYTES``."""
    pixels = np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(folder / "turned.jpg", exif=exif.tobytes())
    Image.fromarray(pixels).save(folder / "big_header.jpg", icc_profile=bytes(2 * HEADER_BYTES))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(endpoint, boto3 client, the local folder the bucket's photos/ holds)."""
    pytest.importorskip("moto", reason=needs_moto.kwargs["reason"])
    folder = make_photos(tmp_path_factory.mktemp("stores") / "in")
    add_odd_files(folder)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        with s3_server(folder, "photos") as (endpoint, client):
            yield endpoint, client, folder
    filesystem.cache_clear()


def test_a_bucket_prefix_is_listed_like_a_folder(store):
    endpoint, _, folder = store
    local = collect_inputs([str(folder)])
    remote = collect_inputs([s3_uri(endpoint, "photos")])
    assert [f.relative for f in remote.files] == [f.relative for f in local.files]  # same names, same order
    assert remote.folders == ()  # no local folder: the output cannot land in it
    assert all(isinstance(f.source, StoreObject) for f in remote.files)
    assert str(remote.files[0].source) == f"s3://{BUCKET}/photos/big_header.jpg"  # the query is left out
    one = collect_inputs([s3_uri(endpoint, "photos/sub/crop_1.png")])
    assert [(str(f.source), f.relative) for f in one.files] == [(f"s3://{BUCKET}/photos/sub/crop_1.png",
                                                                 Path("crop_1.png"))]


def test_a_missing_prefix_or_an_unknown_scheme_is_a_layout_error(store):
    endpoint, _, _ = store
    with pytest.raises(FileLayoutError, match=r"^input not found: s3://gpen-test/nothing\?"):
        collect_inputs([s3_uri(endpoint, "nothing")])
    with pytest.raises(FileLayoutError, match=r"^nope://x/y cannot be read: .*Unrecognized filesystem type"):
        collect_inputs(["nope://x/y"])
    with pytest.raises(FileLayoutError, match=r"^file:///tmp/x: give a local file or folder as its path"):
        collect_inputs(["file:///tmp/x"])


def test_sizes_read_from_the_objects_are_those_of_the_files(store):
    endpoint, _, folder = store
    for entry in collect_inputs([s3_uri(endpoint, "photos")]).files:
        local = folder / entry.relative
        if entry.relative.name == "broken.jpg":
            with pytest.raises(InvalidImageError) as remote_error:
                source_size(entry.source)
            with pytest.raises(InvalidImageError) as local_error:
                image_size(local)
            assert str(remote_error.value) == str(local_error.value)  # names the file as the local reader does
            assert str(remote_error.value).startswith("broken.jpg is not a readable image")
        else:
            assert source_size(entry.source) == image_size(local), entry.relative
    assert image_size(folder / "turned.jpg") == (40, 70)  # the orientation swaps width and height


def test_an_object_that_cannot_be_read_is_an_unreadable_input_naming_it(store, tmp_path):
    endpoint, client, folder = store
    client.put_object(Bucket=BUCKET, Key="photos/gone.jpg", Body=(folder / "face_0.jpg").read_bytes())
    item = next(f for f in collect_inputs([s3_uri(endpoint, "photos")]).files if f.relative.name == "gone.jpg")
    client.delete_object(Bucket=BUCKET, Key="photos/gone.jpg")  # listed, then gone before it is read
    planned = PlannedOutput(item.source, item.relative, tmp_path / "gone.jpg")
    with pytest.raises(InvalidImageError, match=rf"^s3://{BUCKET}/photos/gone.jpg could not be read: "):
        staged(lambda _item: pytest.fail("the process must not run"))(planned)
    seen = []
    staged(lambda one: seen.append(one.source.read_bytes()))(
        PlannedOutput(StoreObject(s3_uri(endpoint, "photos"), f"{BUCKET}/photos/noise.jpg"), Path("noise.jpg"),
                      tmp_path / "noise.jpg"))
    assert seen == [(folder / "noise.jpg").read_bytes()]  # the process got a local copy of the object's bytes


def test_the_standard_aws_variables_are_honoured(store, monkeypatch):
    endpoint, _, _ = store
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{endpoint}")
    filesystem.cache_clear()
    try:
        assert len(collect_inputs([f"s3://{BUCKET}/photos"]).files) == 14
    finally:
        filesystem.cache_clear()


def test_an_output_in_an_object_store_is_refused_before_any_work(store, capsys):
    import cli

    endpoint, _, folder = store
    assert cli.main(args(folder, s3_uri(endpoint, "restored"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: --output {s3_uri(endpoint, 'restored')}: outputs are written to a local or "
                          f"mounted folder only (an object store has no exclusive create")


def test_video_frames_from_an_object_store_are_refused(store, tmp_path, capsys):
    import cli

    endpoint, _, _ = store
    assert cli.main(args(s3_uri(endpoint, "photos"), tmp_path / "out", "--video-frames")) == 2
    assert capsys.readouterr().err.strip() == ("error: --video-frames reads its frames from local (or mounted) "
                                               "folders only; copy them there")


def test_the_local_engine_restores_from_a_bucket_what_it_restores_from_a_folder(store, tmp_path, capsys):
    import cli

    endpoint, _, folder = store
    assert cli.main(args(folder / "sub", tmp_path / "from_folder", "--save-json")) == 0
    assert cli.main(args(s3_uri(endpoint, "photos/sub"), tmp_path / "from_bucket", "--save-json")) == 0
    expected = files_under(tmp_path / "from_folder")
    assert {"crop_0.png", "crop_1.png", "crop_2.png", "faces.json"} <= set(expected)
    assert files_under(tmp_path / "from_bucket") == expected
    out = capsys.readouterr().out
    assert "3 image(s): 3 restored, 0 unchanged, 0 skipped, 0 failed" in out.splitlines()[-1]
    broken = s3_uri(endpoint, "photos/broken.jpg")
    assert cli.main(args(broken, tmp_path / "broken")) == 2
    assert f"skipped s3://{BUCKET}/photos/broken.jpg: broken.jpg is not a readable image" in capsys.readouterr().err


@pytest.mark.parametrize(("uri", "shown"), [
    ("s3://AKIAKEY:SECRET@bucket/photos?region=eu-west-1", "s3://***@bucket/photos?region=eu-west-1"),
    ("s3://AKIAKEY:SE/CRET@bucket/photos", "s3://***@bucket/photos"),  # a "/" in the secret: pyarrow refuses it
    ("s3://bucket/p?access_key=AKIAKEY&secret_key=S%2BC&session_token=TOK&endpoint_override=minio:9000",
     "s3://bucket/p?access_key=***&secret_key=***&session_token=***&endpoint_override=minio:9000"),
    ("abfs://container@account.dfs.core.windows.net/p?sv=2022&sig=SIG", "abfs://***@account.dfs.core.windows.net/p"
                                                                         "?sv=2022&sig=***"),
    ("https://host/p?X-Amz-Signature=abc&Token=t&password=pw#frag", "https://host/p?X-Amz-Signature=***&Token=***"
                                                                     "&password=***#***"),
    ("s3://bucket/me@home.jpg", "s3://bucket/me@home.jpg"),  # a @ in a key name is not a userinfo
    ("/photos/a:b@c.jpg", "/photos/a:b@c.jpg"),  # a local path as it is
])
def test_a_uri_is_shown_without_its_secrets(uri, shown):
    assert redacted(uri) == shown
    assert without_secrets(f"cannot parse '{uri}' (secret TOK, S+C; SECRET here)", uri) == (
        f"cannot parse '{shown}' (secret {'***' if 'TOK' in uri else 'TOK'}, {'***' if 'S%2BC' in uri else 'S+C'}; "
        f"{'***' if ':SECRET@' in uri else 'SECRET'} here)")


SECRETS = ("AKIAEXAMPLEKEY", "SECRETVALUE42", "SESSIONTOKEN7")


@pytest.mark.parametrize("form", ["userinfo", "query", "unparsable"])
def test_a_uri_with_credentials_in_a_failing_run_is_never_printed(store, form, tmp_path, capsys, caplog):
    import cli

    endpoint, _, _ = store
    uri, shown = {
        "userinfo": (f"s3://AKIAEXAMPLEKEY:SECRETVALUE42@{BUCKET}/nothing?endpoint_override={endpoint}&scheme=http",
                     f"error: input not found: s3://***@{BUCKET}/nothing?endpoint_override={endpoint}&scheme=http"),
        # pyarrow 26 takes no credentials from the query, but a user may type them there
        "query": (s3_uri(endpoint, "nothing") + "&access_key=AKIAEXAMPLEKEY&secret_key=SECRETVALUE42&session_token="
                  "SESSIONTOKEN7", f"error: {s3_uri(endpoint, 'nothing')}&access_key=***&secret_key=***"
                                   f"&session_token=*** cannot be read: Unexpected query parameter in S3 URI"),
        # pyarrow's own message quotes the whole URI
        "unparsable": (f"s3://AKIAEXAMPLEKEY:SECRETVALUE42/x@{BUCKET}/photos",
                       f"error: s3://***@{BUCKET}/photos cannot be read: Cannot parse URI: 's3://***@{BUCKET}/photos'"),
    }[form]
    caplog.set_level(logging.DEBUG)
    assert cli.main(args(uri, tmp_path / "out", "--verbose")) == 2  # --verbose: the traceback is logged too
    out, err = capsys.readouterr()
    printed = out + err + caplog.text
    assert "Traceback" in caplog.text and err.startswith(shown)
    assert not [secret for secret in SECRETS if secret in printed]
    assert not (tmp_path / "out").exists()


def test_an_object_store_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import cli

    for name in ("pyarrow", "pyarrow.fs"):
        monkeypatch.setitem(sys.modules, name, None)  # import pyarrow fails, as when it is not installed
    filesystem.cache_clear()
    assert cli.main(args("s3://KEY:SECRET@bucket/photos", tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SECRET" not in err
    assert err.startswith("error: reading s3://***@bucket/photos needs pyarrow (its pyarrow.fs reads object stores), "
                          "which cannot be imported here (ModuleNotFoundError: ")
    assert ("Install it into the Python that runs this pack: `python -m pip install pyarrow (or python -m pip install "
            '"ray[data]", which brings it)`; or copy the images to a local or mounted folder') in err
    assert not (tmp_path / "out").exists()
