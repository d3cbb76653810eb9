"""Bad files get specific errors, and nothing in a file is executed."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from conftest import require_shared
from safetensors.torch import save_file
from test_arch_keys import random_state_dict

from gpen_arch import (
    GPEN,
    CheckpointReadError,
    ConfigError,
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


def test_truncated_pth(tmp_path):
    source = require_shared("gpen", "vectors", "gpen_256_cm1_n0.25.pth")
    data = source.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match="truncated or corrupt"):
        read_state_dict(path)


def test_garbage_pth(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointReadError, match="truncated or corrupt|refused"):
        read_state_dict(path)


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
    with pytest.raises(CheckpointReadError, match="refused: it contains Python objects or code"):
        read_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "raw_pickle.pth"  # an old-style (non-zip) pickle
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointReadError):
        read_state_dict(raw)
    assert not marker.exists()


def test_pickled_non_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(NotAGPENCheckpoint, match="holds a list, not a state dict"):
        read_state_dict(path)


def gfpgan_like() -> dict[str, torch.Tensor]:
    return {"conv_body_first.weight": torch.zeros(32, 3, 1, 1), "stylegan_decoder.constant_input.weight": torch.zeros(1),
            "toRGB.0.weight": torch.zeros(3, 512, 1, 1)}


def test_gfpgan_file_is_named(tmp_path):
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": gfpgan_like()}, path)
    with pytest.raises(NotAGPENCheckpoint, match=r"missing generator\.input\.input \(and 3 more\); this looks like a GFPGAN"):
        load_gpen_file(path)


def test_codeformer_file_is_named():
    sd = {"quantize.embedding.weight": torch.zeros(1024, 256), "ft_layers.0.weight": torch.zeros(1),
          "encoder.blocks.0.weight": torch.zeros(1)}
    with pytest.raises(NotAGPENCheckpoint, match="this looks like a CodeFormer"):
        load_gpen({"params_ema": sd})


def test_shapes_that_do_not_fit():
    sd = random_state_dict(256)
    sd["generator.convs.3.conv.weight"] = torch.zeros(1, 7, 7, 3, 3)
    with pytest.raises(NotAGPENCheckpoint, match=r"shape mismatch generator\.convs\.3\.conv\.weight \[1, 7, 7, 3, 3\]"):
        load_gpen(sd)


def test_missing_and_unexpected_keys():
    sd = random_state_dict(256)
    del sd["generator.to_rgbs.2.bias"]
    sd["generator.extra.weight"] = torch.zeros(3)
    with pytest.raises(NotAGPENCheckpoint, match=r"missing generator\.to_rgbs\.2\.bias; unexpected generator\.extra"):
        load_gpen(sd)


def test_encoder_and_decoder_disagree_on_size():
    sd = random_state_dict(256)
    sd.update({f"ecd7.0.{k}": v for k, v in [("0.kernel", torch.zeros(4, 4))]})
    with pytest.raises(NotAGPENCheckpoint, match=r"encoder and decoder disagree on the size"):
        load_gpen(sd)


def test_gap_in_encoder_layers():
    sd = {k: v for k, v in random_state_dict(256).items() if not k.startswith("ecd3.")}
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
