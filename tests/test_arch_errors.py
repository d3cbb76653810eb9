"""Bad files get specific errors, and nothing in a file is executed."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from conftest import data_file
from helpers import random_checkpoint
from safetensors.torch import save_file

from gpen_arch import (
    GPEN,
    CheckpointReadError,
    ConfigError,
    FastOptions,
    GPENConfig,
    GPENError,
    NotAGPENCheckpoint,
    load_gpen,
    load_gpen_file,
    read_state_dict,
)


def test_error_classes_share_a_base():
    assert issubclass(CheckpointReadError, GPENError)
    assert issubclass(NotAGPENCheckpoint, GPENError)
    assert issubclass(ConfigError, GPENError)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointReadError, match="checkpoint not found"):
        read_state_dict(tmp_path / "GPEN-BFR-512.pth")


def test_directory(tmp_path):
    with pytest.raises(CheckpointReadError, match="is a directory"):
        read_state_dict(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointReadError, match="empty file"):
        read_state_dict(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x08\x07ckpt")
    with pytest.raises(CheckpointReadError, match=r"unsupported file type \.ckpt"):
        read_state_dict(path)


def _bad_file(kind: str, tmp_path) -> bytes:
    if kind == "truncated zip":
        whole = tmp_path / "whole.pth"
        torch.save(read_state_dict(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")), whole)
        data = whole.read_bytes()
        return data[: len(data) // 2]
    if kind == "truncated legacy pickle":
        path = tmp_path / "legacy.pth"
        torch.save({"a": torch.zeros(1000)}, path, _use_new_zipfile_serialization=False)
        return path.read_bytes()[:-100]
    if kind == "html page":
        return b"\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"
    if kind == "git lfs pointer":
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1000\n"
    if kind == "random bytes":
        return bytes(range(256)) * 10
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("truncated zip", (r"truncated\.pth is truncated: a zip checkpoint of [\d,]+ bytes without its end .*download it "
                       r"again from its source")),
    ("truncated legacy pickle", (r"truncated\.pth is truncated or damaged \([\d,]+ bytes; the download or copy "
                                 r"probably stopped early\); delete it and download it again")),
    ("html page", (r"truncated\.pth looks like an HTML page \(\d+ bytes\), not a weight file: probably a failed "
                   r"download .*download it again from its source \(README: Model files\)")),
    ("git lfs pointer", r"truncated\.pth is a Git LFS pointer \(\d+ bytes\), not the weights"),
    ("random bytes", (r"truncated\.pth is not a checkpoint: 2,560 bytes of non-checkpoint data \(starting "
                      r"b'\\x00\\x01.*neither a PyTorch \(zip or pickle\) nor a safetensors file")),
])
def test_files_that_are_not_checkpoints_say_which_case(tmp_path, kind, message):
    path = tmp_path / "truncated.pth"
    path.write_bytes(_bad_file(kind, tmp_path))
    with pytest.raises(CheckpointReadError, match=message) as info:
        read_state_dict(path)
    assert "weights_only" not in str(info.value) and "trust" not in str(info.value)
    if kind == "html page":  # the same diagnosis under a .safetensors name
        path.rename(tmp_path / "page.safetensors")
        with pytest.raises(CheckpointReadError, match="page.safetensors looks like an HTML page"):
            read_state_dict(tmp_path / "page.safetensors")


def test_nan_weights_are_refused(tmp_path):
    sd = random_checkpoint(256)
    key = next(k for k in sd if k.endswith("weight"))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[3] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointReadError, match=rf"diverged\.pth: 1 weight tensor\(s\) hold NaN or infinite values "
                                                  rf"\(first: {key}\): the file is damaged"):
        load_gpen_file(path)


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(4)}, str(path))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointReadError, match="not a readable .safetensors file"):
        read_state_dict(path)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        # unpickling this would create the marker file: proof that code ran
        return (shutil.copyfile, (__file__, self.marker))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "GPEN-BFR-512.pth"
    torch.save({"generator.input.input": torch.zeros(1), "evil": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointReadError, match=r"GPEN-BFR-512\.pth was refused: besides tensors it holds Python "
                                                  r"objects \(shutil\.copyfile\) whose loading would run code") as info:
        read_state_dict(path)
    assert "weights_only" not in str(info.value) and "If you trust" not in str(info.value)
    assert not marker.exists()
    raw = tmp_path / "raw_pickle.pth"  # an old-style (non-zip) pickle
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointReadError,
                       match="raw_pickle.pth was refused: besides tensors it holds Python objects"):
        read_state_dict(raw)
    assert not marker.exists()


def test_pickled_non_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(NotAGPENCheckpoint, match="holds a list, not a state dict"):
        read_state_dict(path)


def gfpgan_like() -> dict[str, torch.Tensor]:
    return {"conv_body_first.weight": torch.zeros(32, 3, 1, 1),
            "stylegan_decoder.constant_input.weight": torch.zeros(1), "toRGB.0.weight": torch.zeros(3, 512, 1, 1)}


def test_gfpgan_file_is_named(tmp_path):
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": gfpgan_like()}, path)
    with pytest.raises(NotAGPENCheckpoint,
                       match=r"missing generator\.input\.input \(and 3 more\); this looks like a GFPGAN"):
        load_gpen_file(path)


def test_codeformer_file_is_named():
    sd = {"quantize.embedding.weight": torch.zeros(1024, 256), "ft_layers.0.weight": torch.zeros(1),
          "encoder.blocks.0.weight": torch.zeros(1)}
    with pytest.raises(NotAGPENCheckpoint, match="this looks like a CodeFormer"):
        load_gpen({"params_ema": sd})


@pytest.mark.parametrize(("keys", "described"), [
    (["conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight"], "an ESRGAN/Real-ESRGAN upscaler"),
    (["conv_first.weight", "body.0.rdb1.conv1.weight"], "an ESRGAN/Real-ESRGAN upscaler"),
    (["body.layer1.0.conv1.weight", "ClassHead.0.conv1x1.weight", "LandmarkHead.0.conv1x1.weight"],
     "a RetinaFace face detector"),
    (["model.diffusion_model.input_blocks.0.0.weight"], "a Stable Diffusion checkpoint"),
    (["final_conv.0.weight", "convs.0.0.weight"], "the GPEN discriminator"),
])
def test_other_networks_are_named_from_the_one_lookalike_table(keys, described):
    """``state_dict.LOOKALIKES`` serves state dicts and ONNX graphs alike (it once existed twice, and the state-dict
    copy required old and new ESRGAN keys at once, so it never named an ESRGAN file)."""
    from gpen_arch.state_dict import looks_like

    assert looks_like(keys).startswith(described)
    with pytest.raises(NotAGPENCheckpoint, match=f"this looks like {described}"):
        load_gpen({k: torch.zeros(1) for k in keys})


def test_shapes_that_do_not_fit():
    sd = random_checkpoint(256)
    sd["generator.convs.3.conv.weight"] = torch.zeros(1, 7, 7, 3, 3)
    with pytest.raises(NotAGPENCheckpoint, match=r"shape mismatch generator\.convs\.3\.conv\.weight \[1, 7, 7, 3, 3\]"):
        load_gpen(sd)


def test_missing_and_unexpected_keys():
    sd = random_checkpoint(256)
    del sd["generator.to_rgbs.2.bias"]
    sd["generator.extra.weight"] = torch.zeros(3)
    with pytest.raises(NotAGPENCheckpoint, match=r"missing generator\.to_rgbs\.2\.bias; unexpected generator\.extra"):
        load_gpen(sd)


def test_encoder_and_decoder_disagree_on_size():
    sd = random_checkpoint(256)
    sd.update({f"ecd7.0.{k}": v for k, v in [("0.kernel", torch.zeros(4, 4))]})
    with pytest.raises(NotAGPENCheckpoint, match=r"encoder and decoder disagree on the size"):
        load_gpen(sd)


def test_gap_in_encoder_layers():
    sd = {k: v for k, v in random_checkpoint(256).items() if not k.startswith("ecd3.")}
    with pytest.raises(NotAGPENCheckpoint, match=r"not numbered ecd0\.\.ecdN without gaps"):
        load_gpen(sd)


def test_non_power_of_two_size():
    with pytest.raises(ConfigError, match="power of two between 16 and 2048; got 300"):
        GPENConfig(size=300)
    with pytest.raises(ConfigError, match="power of two"):
        GPENConfig(size=4096)


def test_empty_state_dict():
    with pytest.raises(NotAGPENCheckpoint, match="holds no tensors"):
        load_gpen({})


def test_forward_rejects_wrong_shapes():
    model = GPEN(GPENConfig(size=32, channel_multiplier=1, narrow=0.0625)).eval()
    with pytest.raises(ValueError, match=r"GPEN-32 expects input of shape \[N, 3, 32, 32\].*got \[1, 3, 64, 64\]"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"got \[3, 32, 32\]"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    for bad in (float("nan"), float("inf")):
        x = torch.zeros(1, 3, 32, 32)
        x[0, 1, 5, 7] = bad
        with pytest.raises(ValueError, match="GPEN input contains NaN or infinite values"):
            model(x)


def test_the_input_check_lets_the_network_be_traced_for_export():
    """ONNX export (torch.export underneath) traces symbolic values: the finiteness check must step aside there
    and still run on real input."""
    model = GPEN(GPENConfig(size=64, channel_multiplier=1, narrow=0.0625)).eval()
    model.fast_options = FastOptions(use_fast_path=False)  # the layer-by-layer graph an export writes
    x = torch.zeros(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), model(x))
    with pytest.raises(ValueError, match="GPEN input contains NaN or infinite values"):
        model(torch.full((1, 3, 64, 64), float("nan")))
