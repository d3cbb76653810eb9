"""GPEN ONNX exports load into our network: by structure, scales undone, every fixture reproducing the official
output; bad and hostile files get their own error, and nothing in them is run or read outside their folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, _in_ci, data_file, require_shared
from safetensors.torch import load_file

from gpen_arch import CheckpointReadError, NotAGPENCheckpoint, expected_shapes, load_gpen, read_state_dict
from gpen_arch.formats.onnx_import import _unscale

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402 - only once onnx is known to be there

DATA = REPO_ROOT / "tests" / "data" / "onnx"
LEGACY_256 = "compact_256_cm1_n0.0625_s64_legacy"
DYNAMO_512 = "compact_512_cm2_n0.0625_s64_dynamo"
FIXTURES = [LEGACY_256, "compact_256_cm1_n0.0625_s64_dynamo", "compact_512_cm2_n0.0625_s64_legacy", DYNAMO_512]
FP16_BOUND = 5e-3  # float16 weights, float32 network, against the official float32 output: measured 9.4e-4


def fixture_path(name: str) -> Path:
    """The two fixtures kept in tests/data, the other two from ../shared."""
    local = DATA / f"{name}.onnx"
    return local if local.is_file() else require_shared("gpen", "onnx", f"{name}.onnx")


def compact_vector(name: str):
    """(config json, official weights, input [1, 3, S, S] in [-1, 1], official output) of a compact vector."""
    vector = name.rsplit("_", 1)[0]
    folder = data_file("gpen", "compact")
    meta = json.loads((folder / f"{vector}.json").read_text())
    io = load_file(str(folder / f"{vector}_io.safetensors"))
    x = ((io["input_rgb_u8"].float() / 255) - 0.5) / 0.5
    return meta, load_file(str(folder / f"{vector}.safetensors")), x.permute(2, 0, 1).unsqueeze(0), io["output"]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_reproduces_the_official_output(name):
    meta, official, x, expected = compact_vector(name)
    sd = read_state_dict(fixture_path(name))
    model = load_gpen(sd)
    config = model.config
    assert (config.size, config.channel_multiplier, config.style_dim, config.n_mlp) == (
        meta["size"], meta["channel_multiplier"], meta["style_dim"], meta["n_mlp"])
    assert config.narrow == pytest.approx(meta["narrow"])
    assert list(sd) == list(expected_shapes(config))  # the released key order
    for key, value in official.items():  # every weight where the official network keeps it, scales undone
        torch.testing.assert_close(sd[key], value.float(), rtol=1e-6, atol=0, msg=key)
    with torch.no_grad():
        out = model(x)
    error = (out - expected).abs().max().item()
    assert error <= 1e-4, f"{name}: max abs error {error:.3g}"


def test_undone_scales_give_the_files_values_back_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    for scale in (1 / np.sqrt(1024 * 9), 0.01 / np.sqrt(512), 0.01, 1 / np.sqrt(3)):
        folded = (torch.randn(200_000, generator=gen) * scale).numpy()
        weight = _unscale(folded, scale)
        assert torch.equal(weight * scale, torch.from_numpy(folded))  # what EqualConv2d/EqualLinear compute


def to_float16(model):
    """The same graph with float16 weights and arithmetic (what onnxconverter-common's float16 converter makes)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float16)))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    return model


def test_float16_export(tmp_path):
    _, _, x, expected = compact_vector(LEGACY_256)
    path = tmp_path / "GPEN-fp16.onnx"
    onnx.save(to_float16(onnx.load(str(fixture_path(LEGACY_256)))), str(path))
    stored = {t.data_type for t in onnx.load(str(path)).graph.initializer if t.data_type != TensorProto.INT64}
    assert stored == {TensorProto.FLOAT16}
    sd = read_state_dict(path)
    assert all(v.dtype == torch.float32 for v in sd.values())
    with torch.no_grad():
        out = load_gpen(sd)(x)
    error = (out - expected).abs().max().item()
    assert 0 < error <= FP16_BOUND, f"float16 export: max abs error {error:.3g}"


def test_onnx_runtime_agrees_with_our_network():
    try:
        import onnxruntime
    except ImportError:
        if _in_ci():
            pytest.fail("onnxruntime is missing in CI (requirements-test.txt lists it)")
        pytest.skip("onnxruntime is not installed")
    path = fixture_path(DYNAMO_512)
    _, _, x, _ = compact_vector(DYNAMO_512)
    x = x.flip(-1) * 0.8  # an input the fixture was not made with
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ours = load_gpen(read_state_dict(path))(x)
    error = (ours - torch.from_numpy(theirs)).abs().max().item()
    assert error <= 1e-4, f"ONNX Runtime vs ours: max abs error {error:.3g}"


def test_external_data_beside_the_model_loads(tmp_path):
    model = onnx.load(str(fixture_path(LEGACY_256)))
    onnx.save_model(model, str(tmp_path / "GPEN.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="GPEN.onnx.data", size_threshold=1024)
    assert (tmp_path / "GPEN.onnx.data").stat().st_size > 1_000_000
    external = read_state_dict(tmp_path / "GPEN.onnx")
    inline = read_state_dict(fixture_path(LEGACY_256))
    assert all(torch.equal(external[k], inline[k]) for k in inline)


def tiny_model(*, inputs=(("input", [1, 3, 16, 16]),), nodes=None, initializers=(), opset=17):
    """A small valid ONNX model built with onnx.helper."""
    if nodes is None:
        nodes = [helper.make_node("Conv", ["input", "w"], ["output"], name="/conv_first/Conv")]
        initializers = [numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in inputs],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def with_external_weight(location: str, folder: Path) -> Path:
    model = tiny_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "864")):
        tensor.external_data.add(key=key, value=value)
    path = folder / "models" / "GPEN-BFR-512.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "../secret.bin", "/etc/passwd"])
def test_external_data_outside_the_folder_is_refused_unread(tmp_path, location, monkeypatch):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 864)
    path = with_external_weight(location, tmp_path)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises(CheckpointReadError, match=r"names its data at .*Refused: this file may be trying to read"):
        read_state_dict(path)
    assert not any("passwd" in f or "secret" in f for f in opened)


def test_external_data_through_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 864)
    path = with_external_weight("weights.bin", tmp_path)
    os.symlink(tmp_path / "secret.bin", path.parent / "weights.bin")
    with pytest.raises(CheckpointReadError, match="outside the model's folder"):
        read_state_dict(path)


def test_missing_external_data(tmp_path):
    path = with_external_weight("weights.bin", tmp_path)
    with pytest.raises(CheckpointReadError, match=r"keeps its data in 'weights.bin', which is missing"):
        read_state_dict(path)


def test_truncated_file(tmp_path):
    data = fixture_path(DYNAMO_512).read_bytes()
    path = tmp_path / "GPEN-BFR-512.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match="is not a readable ONNX file: it is truncated or corrupt"):
        read_state_dict(path)


def test_file_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("gpen_arch.formats.onnx_graph.MAX_ONNX_BYTES", 1_000_000)
    with pytest.raises(CheckpointReadError, match=r"GiB; a GPEN ONNX file is at most about 0.3 GB"):
        read_state_dict(fixture_path(DYNAMO_512))


def test_onnx_package_missing(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(CheckpointReadError, match=r"needs the 'onnx' package.*pip install onnx"):
        read_state_dict(fixture_path(DYNAMO_512))


def save(model, tmp_path, name="model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def test_a_plain_network_is_not_gpen(tmp_path):
    with pytest.raises(NotAGPENCheckpoint, match=r"not a GPEN network: model.onnx has no modulated convolutions"):
        read_state_dict(save(tiny_model(nodes=[helper.make_node("Relu", ["input"], ["output"])]), tmp_path))


def test_gfpgan_export_is_named(tmp_path):
    w = numpy_helper.from_array(np.ones((8, 3, 1, 1), np.float32), "conv_body_first.weight")
    nodes = [helper.make_node("Conv", ["input", "conv_body_first.weight"], ["h"], name="/conv_body_first/Conv"),
             helper.make_node("Relu", ["h"], ["output"], name="/stylegan_decoder/style_convs.0/Relu")]
    with pytest.raises(NotAGPENCheckpoint, match="not a GPEN network.*this looks like a GFPGAN"):
        read_state_dict(save(tiny_model(nodes=nodes, initializers=[w]), tmp_path, "GFPGANv1.4.onnx"))


def test_inswapper_is_named(tmp_path):
    nodes = [helper.make_node("Identity", ["target"], ["output"])]
    model = tiny_model(inputs=(("target", [1, 3, 128, 128]), ("source", [1, 512])), nodes=nodes)
    with pytest.raises(NotAGPENCheckpoint, match=r"has target \[1, 3, 128, 128\], source \[1, 512\]; this looks "
                                                 r"like an InsightFace face swapper"):
        read_state_dict(save(model, tmp_path, "inswapper_128.onnx"))


def edited(name: str, edit) -> onnx.ModelProto:
    model = onnx.load(str(fixture_path(name)))
    edit(model.graph)
    return model


def node_named(graph, name):
    return next(n for n in graph.node if n.name == name)


def test_to_rgb_bias_fused_into_the_convolution(tmp_path):
    """The community files are said to carry the to_rgb biases as the 1x1 convolution's own [3] bias input."""
    _, _, x, expected = compact_vector(LEGACY_256)

    def edit(graph):
        biases = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("to_rgbs.1.bias")}
        graph.initializer.append(numpy_helper.from_array(biases["generator.to_rgbs.1.bias"].reshape(3), "rgb1_bias"))
        node_named(graph, "/generator/to_rgbs.1/conv/Conv").input.append("rgb1_bias")
        add = node_named(graph, "/generator/to_rgbs.1/Add")
        add.op_type = "Identity"
        del add.input[1:]

    sd = read_state_dict(save(edited(LEGACY_256, edit), tmp_path))
    with torch.no_grad():
        assert (load_gpen(sd)(x) - expected).abs().max().item() <= 1e-4


def test_rewired_to_rgb_is_refused(tmp_path):
    """Right tensors, right shapes, other wiring: to_rgbs.2 reads convs.4's output instead of convs.5's (ONNX
    Runtime would run it, and an order- or name-based mapping would accept it)."""
    def edit(graph):
        node_named(graph, "/generator/to_rgbs.2/conv/Reshape_2").input[0] = "/generator/convs.4/activate/Mul_output_0"

    path = save(edited(LEGACY_256, edit), tmp_path, "GPEN-BFR-256.onnx")
    with pytest.raises(NotAGPENCheckpoint, match=r"GPEN-BFR-256.onnx looks like a GPEN export, but its wiring is not "
                                                 r"GPEN's: found no generator\.to_rgbs\.2 \(a 1x1 modulated conv\)"):
        read_state_dict(path)


def test_shuffled_named_weights_are_refused(tmp_path):
    """Two same-shaped weights swapped between their layers: the structure contradicts the names they carry."""
    def edit(graph):
        users = [n for n in graph.node if n.op_type == "Mul" and n.input[0] in
                 ("generator.convs.0.conv.weight", "generator.convs.1.conv.weight")]
        users[0].input[0], users[1].input[0] = users[1].input[0], users[0].input[0]

    with pytest.raises(NotAGPENCheckpoint, match=r"wiring is not GPEN's: the initializer named "
                                                 r"generator\.convs\.1\.conv\.weight feeds the place of "
                                                 r"generator\.convs\.0\.conv\.weight"):
        read_state_dict(save(edited(DYNAMO_512, edit), tmp_path))


def test_encoder_feature_added_instead_of_concatenated_is_refused(tmp_path):
    def edit(graph):
        concat = node_named(graph, "/generator/convs.3/noise/Concat")
        concat.op_type = "Add"
        del concat.attribute[:]

    with pytest.raises(NotAGPENCheckpoint, match=r"wiring is not GPEN's: found no concatenation of "
                                                 r"generator\.convs\.3's output"):
        read_state_dict(save(edited(LEGACY_256, edit), tmp_path))


def test_super_resolution_layout_is_refused(tmp_path):
    def bigger_output(graph):
        for value, side in ((graph.input[0], 512), (graph.output[0], 1024)):
            dims = value.type.tensor_type.shape.dim
            dims[2].dim_value = dims[3].dim_value = side

    with pytest.raises(NotAGPENCheckpoint, match=r"maps a 512x512 input to a 1024x1024 output: that is the official "
                                                 r"FullGenerator_SR layout"):
        read_state_dict(save(edited(DYNAMO_512, bigger_output), tmp_path))
    random = edited(LEGACY_256, lambda g: g.node.append(helper.make_node("RandomNormalLike", ["input"], ["noise"])))
    with pytest.raises(NotAGPENCheckpoint, match=r"draws random numbers \(RandomNormalLike\): that is the official "
                                                 r"FullGenerator_SR layout"):
        read_state_dict(save(random, tmp_path))


def test_convert_command(tmp_path):
    import cli

    source = fixture_path(LEGACY_256)
    out = tmp_path / "sub" / "GPEN-256.safetensors"
    assert cli.main(["convert", str(source), str(out)]) == 0
    converted, direct = load_file(str(out)), read_state_dict(source)
    assert set(converted) == set(direct) and all(torch.equal(converted[k], direct[k]) for k in direct)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind
    before = out.stat().st_mtime_ns
    assert cli.main(["convert", str(source), str(out)]) == 2  # exists: refused
    assert out.stat().st_mtime_ns == before
    assert cli.main(["convert", str(source), str(out), "--overwrite"]) == 0
    assert cli.main(["convert", str(source), str(tmp_path / "x.pth")]) == 2
    shutil.copy(source, tmp_path / "broken.onnx")
    (tmp_path / "broken.onnx").write_bytes(source.read_bytes()[:1000])
    assert cli.main(["convert", str(tmp_path / "broken.onnx"), str(tmp_path / "y.safetensors")]) == 1
    assert not (tmp_path / "y.safetensors").exists()


def test_quick_look_for_model_lists(tmp_path):
    from gpen_arch.formats.onnx_import import onnx_not_gpen_reason

    assert onnx_not_gpen_reason(fixture_path(LEGACY_256)) is None
    assert onnx_not_gpen_reason(fixture_path(DYNAMO_512)) is None
    plain = save(tiny_model(nodes=[helper.make_node("Relu", ["input"], ["output"])]), tmp_path, "plain.onnx")
    assert onnx_not_gpen_reason(plain) == "not a GPEN network: it has no transposed (upsampling) convolutions"
    swapper = tiny_model(inputs=(("target", [1, 3, 128, 128]), ("source", [1, 512])),
                         nodes=[helper.make_node("Identity", ["target"], ["output"])])
    assert "InsightFace face swapper" in onnx_not_gpen_reason(save(swapper, tmp_path, "inswapper_128.onnx"))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(fixture_path(LEGACY_256).read_bytes()[:5000])
    assert onnx_not_gpen_reason(truncated) is None  # cannot tell: listed, and loading explains
