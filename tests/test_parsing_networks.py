"""Parsing networks of any width (issue 26, part 3): a ParseNet's configuration is read from its tensors, so the
reduced-width ParseNet of the pipeline vectors loads from .pth and .safetensors and reproduces the official parse
maps; a file that is not a parser is refused saying what it looks like."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file, require_shared

from face_pipeline.paste import parsing
from face_pipeline.paste.parsenet_config import NotAParseNet, ParseNetConfig, infer_parsenet_config
from face_pipeline.paste.parsing import ParsingWeightsCorrupt, load_parsing_file, load_parsing_net, parse_faces

NARROW = "parsenet_512_b8_c4-32_seed1"
# the pipeline vectors' ParseNet: base_ch 8, ch_range [4, 32] (no channel count reaches 4: the smallest is 8, and
# (8, 32) builds the same network), 4 down and 4 up steps, depth 10, 19 labels, batch norm
NARROW_CONFIG = ParseNetConfig(base_ch=8, ch_range=(8, 32), down_steps=4, up_steps=4, res_depth=10, parsing_ch=19,
                               norm_type="bn", relu_type="LeakyReLU")


def bgr_as_rgb_tensor(path) -> torch.Tensor:
    """A colour PNG (cv2.imread's BGR array) as ``[1, 3, H, W]`` RGB 0..1 float32."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)[None].float() / 255


def test_the_released_configuration_is_read_from_shapes():
    from facexlib.parsing import ParseNet

    state = ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()
    config = infer_parsenet_config(state)
    # ch_range [32, 256] as built; the smallest channel count is 64, and (64, 256) builds the same network
    assert config == ParseNetConfig(base_ch=64, ch_range=(64, 256), down_steps=4, up_steps=4, res_depth=10,
                                    parsing_ch=19, norm_type="bn", relu_type="LeakyReLU")
    rebuilt = ParseNet(**config.build_kwargs()).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in state.items()}
    assert config.out_size == 512 and config.build_kwargs()["min_feat_size"] == 32


def test_the_narrow_parsenet_loads_by_shape_from_safetensors():
    net = load_parsing_file(data_file("gpen", "pipeline", f"{NARROW}.safetensors"))
    assert net.kind == "parsenet" and net.config == NARROW_CONFIG
    # the vector's .json counts 338,542 numbers: parameters and batch-norm running statistics
    assert sum(p.numel() for p in net.module.parameters()) + sum(
        b.numel() for n, b in net.module.named_buffers() if n.endswith(("running_mean", "running_var"))) == 338542


def test_the_narrow_parsenet_loads_from_pth_with_the_same_tensors():
    pth = load_parsing_file(require_shared("gpen", "pipeline", f"{NARROW}.pth"))
    st = load_parsing_file(data_file("gpen", "pipeline", f"{NARROW}.safetensors"))
    assert pth.config == st.config == NARROW_CONFIG
    a, b = pth.module.state_dict(), st.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_folder_with_the_safetensors_parser_is_found(tmp_path):
    shutil.copy(data_file("gpen", "pipeline", f"{NARROW}.safetensors"), tmp_path / "parsing_parsenet.safetensors")
    assert load_parsing_net(tmp_path).config == NARROW_CONFIG


def test_the_narrow_parsenet_reproduces_the_official_parse_map():
    """Tolerance: at most 1 pixel of 262,144 differs (float summation order of the convolutions; the README of the
    vectors allows 0.1%)."""
    net = load_parsing_file(data_file("gpen", "pipeline", f"{NARROW}.safetensors"))
    restored = bgr_as_rgb_tensor(data_file("gpen", "pipeline", "grace_hopper_face0_restored.png"))
    face = parse_faces(restored, net=net, keep_hair=True, exact_input=True)
    official = cv2.imread(str(data_file("gpen", "pipeline", "grace_hopper_face0_parse.png")), cv2.IMREAD_UNCHANGED)
    assert face.shape == (1, 1, 512, 512)
    assert int(((face[0, 0].numpy() * 255).astype(np.uint8) != official).sum()) <= 1


@pytest.mark.parametrize("name,faces", [("pexels_woman_large_face", 1), ("solvay_crop", 8)])
def test_the_narrow_parsenet_reproduces_the_other_vectors_parse_maps(name, faces):
    net = load_parsing_file(data_file("gpen", "pipeline", f"{NARROW}.safetensors"))
    for k in range(faces):
        restored = bgr_as_rgb_tensor(require_shared("gpen", "pipeline", f"{name}_face{k}_restored.png"))
        face = parse_faces(restored, net=net, keep_hair=True, exact_input=True)
        official = cv2.imread(str(require_shared("gpen", "pipeline", f"{name}_face{k}_parse.png")),
                              cv2.IMREAD_UNCHANGED)
        assert int(((face[0, 0].numpy() * 255).astype(np.uint8) != official).sum()) <= 0.001 * 512 * 512, (name, k)


def test_a_gpen_checkpoint_given_as_a_parser_is_refused_naming_it():
    gpen = data_file("gpen", "compact", "compact_512_cm2_n0.0625_s64.safetensors")
    with pytest.raises(ParsingWeightsCorrupt, match=r"compact_512_cm2_n0\.0625_s64\.safetensors is not a parsenet "
                                                    r"face-parsing network: not a ParseNet: missing encoder\.0\.conv2d"
                                                    r"\.weight \(and 3 more\); this looks like a GPEN "
                                                    r"face-restoration model \(give it as the GPEN model"):
        load_parsing_file(gpen)


def test_a_gpen_checkpoint_in_the_parsing_folder_is_refused(tmp_path):
    shutil.copy(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors"),
                tmp_path / "parsing_parsenet.safetensors")
    parsing._load.cache_clear()
    with pytest.raises(ParsingWeightsCorrupt, match="this looks like a GPEN face-restoration model"):
        load_parsing_net(tmp_path)


def test_a_detector_given_as_a_parser_is_refused_naming_it(tmp_path):
    with pytest.raises(ParsingWeightsCorrupt, match="this looks like a RetinaFace face detector"):
        load_parsing_file(data_file("detectors", "detection_mobilenet0.25_Final.pth"))


def test_a_parsenet_with_a_missing_block_is_refused_naming_it():
    from facexlib.parsing import ParseNet

    state = ParseNet(in_size=512, out_size=512, base_ch=8, ch_range=[8, 32], parsing_ch=19).state_dict()
    assert infer_parsenet_config(state).res_depth == 10
    gap = {k: v for k, v in state.items() if not k.startswith("body.3.")}
    with pytest.raises(NotAParseNet, match=r"its body blocks are not numbered 0\.\.N without gaps: \[0, 1, 2, 4, "):
        infer_parsenet_config(gap)
