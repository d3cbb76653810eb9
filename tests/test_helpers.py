"""The shared test helpers: random GPEN weights are deterministic, make every path contribute, and equal the
benchmarks' random weights."""

from __future__ import annotations

import importlib.util

import torch
from conftest import REPO_ROOT
from helpers import load_photo, official_landmarks, random_checkpoint, random_gpen, random_gpen_state

from gpen_arch import GPENConfig

SMALL = GPENConfig(size=32, channel_multiplier=1, narrow=0.125)


def test_random_gpen_is_deterministic_and_every_path_contributes():
    first, again, other = random_gpen_state(SMALL, seed=3), random_gpen_state(SMALL, seed=3), random_gpen_state(SMALL)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    noise = [v for k, v in first.items() if k.endswith("noise.weight")]
    assert noise and all(((0.2 <= v) & (v <= 0.8)).all() for v in noise)
    biases = [v for k, v in first.items() if k.endswith("bias") and "modulation" not in k]
    assert biases and all(v.abs().max() > 0 for v in biases)
    model = random_gpen(SMALL, seed=3)
    assert not model.training and all(torch.equal(v, first[k]) for k, v in model.state_dict().items())


def test_the_benchmarks_draw_the_same_weights():
    spec = importlib.util.spec_from_file_location("bench_gpen", REPO_ROOT / "benchmarks" / "bench_gpen.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ours, theirs = random_gpen_state(256, seed=1), bench._random_state_dict(256, 1)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_random_checkpoint_and_photos():
    checkpoint = random_checkpoint(256)
    assert torch.equal(checkpoint["final_linear.0.bias"], random_checkpoint(256)["final_linear.0.bias"])
    photo = load_photo("grace_hopper.jpg")
    assert photo.shape == (1, 3, 600, 512) and photo.dtype == torch.float32 and 0 <= photo.min() < photo.max() <= 1
    landmarks = official_landmarks("grace_hopper.jpg")
    assert landmarks.shape == (5, 2) and (landmarks[:, 0] < 512).all() and (landmarks[:, 1] < 600).all()
