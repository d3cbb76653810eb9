"""State-dict keys and shapes are the released ones; random weights round-trip through .pth and .safetensors."""

from __future__ import annotations

import pytest
import torch
from conftest import data_file
from helpers import random_checkpoint
from safetensors.torch import save_file

from gpen_arch import GPEN, RELEASED_CONFIGS, GPENConfig, expected_shapes, infer_config, load_gpen, read_state_dict


def released_keys(size: int) -> list[tuple[str, tuple[int, ...]]]:
    path = data_file("gpen", "keys", f"keys_{size}.txt")
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape = line.split()
            rows.append((name, tuple(int(d) for d in shape.strip("[]").split(","))))
    return rows


@pytest.mark.parametrize("size", sorted(RELEASED_CONFIGS))
def test_keys_and_shapes_are_the_released_ones(size):
    ours = [(k, tuple(v)) for k, v in expected_shapes(RELEASED_CONFIGS[size]).items()]
    assert ours == released_keys(size)  # same keys, same shapes, same order


@pytest.mark.parametrize("config", [*RELEASED_CONFIGS.values(), GPENConfig(size=16),
                                    GPENConfig(size=64, channel_multiplier=3, narrow=0.25, style_dim=64, n_mlp=2)],
                         ids=lambda c: f"{c.size}-cm{c.channel_multiplier}-n{c.narrow}")
def test_expected_shapes_are_the_models_own_state_dict(config):
    """``state_dict.expected_shapes`` is computed from the config without building the model (so the leaf module
    imports no network): it must list exactly what ``GPEN(config).state_dict()`` holds, in its order."""
    with torch.device("meta"):
        model = GPEN(config)
    assert list(expected_shapes(config).items()) == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("size", sorted(RELEASED_CONFIGS))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_random_weights_round_trip(tmp_path, size, suffix):
    sd = random_checkpoint(size)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    loaded = read_state_dict(path)
    assert infer_config(loaded) == RELEASED_CONFIGS[size]
    model = load_gpen(loaded)
    assert model.config == RELEASED_CONFIGS[size]
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


@pytest.mark.parametrize("wrap", ["g_ema", "params_ema", "params", "state_dict", "module", "nested"])
def test_wrapped_checkpoints_load(tmp_path, wrap):
    sd = random_checkpoint(256)
    if wrap == "module":
        stored = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "nested":
        stored = {"state_dict": {"g_ema": sd}, "iter": 5}
    else:
        stored = {wrap: sd, "g": {k: torch.zeros(1) for k in list(sd)[:3]}, "epoch": 3}
    path = tmp_path / "wrapped.pth"
    torch.save(stored, path)
    model = load_gpen(read_state_dict(path))
    assert torch.equal(model.generator.input.input, sd["generator.input.input"])


def test_the_training_wrapper_prefers_ema_weights(tmp_path):
    ema = random_checkpoint(256)
    raw = {k: v + 1 for k, v in ema.items()}
    model = load_gpen({"g": raw, "g_ema": ema, "d": {}})
    assert torch.equal(model.final_linear[0].bias, ema["final_linear.0.bias"])


def test_other_released_generators_share_the_network():
    # GPEN-Colorization-1024 / GPEN-Inpainting-1024 are FullGenerator(1024, cm 2, narrow 1) and GPEN-Seg2face-512 is
    # FullGenerator(512, cm 2, narrow 1): the same key sets as the BFR models of those sizes.
    assert infer_config(random_checkpoint(1024)).size == 1024
    assert infer_config(random_checkpoint(512)) == RELEASED_CONFIGS[512]


def test_missing_blur_kernels_are_filled_with_the_constants():
    sd = {k: v for k, v in random_checkpoint(256).items() if not k.endswith(".kernel")}
    model = load_gpen(sd)
    assert model.generator.convs[0].conv.blur.kernel.sum().item() == pytest.approx(4.0)
    assert model.ecd1[0][0].kernel.sum().item() == pytest.approx(1.0)


def test_dtype_and_device_arguments():
    model = load_gpen({k: v.half() for k, v in random_checkpoint(256).items()})
    assert model.final_linear[0].weight.dtype == torch.float32  # float32 unless asked otherwise
    model = load_gpen(random_checkpoint(256), dtype=torch.bfloat16, device="cpu")
    assert model.final_linear[0].weight.dtype == torch.bfloat16
