"""A fast-path option that cannot be honoured says so once, with its reason, in the log (never silently)."""

from __future__ import annotations

import logging

import pytest
import torch

from gpen_arch import GPEN, FastOptions, GPENConfig
from gpen_arch.ops import triton_epilogue

LOGGER = "gpen_arch.ops.triton_epilogue"


@pytest.fixture
def fresh_reports(monkeypatch):
    monkeypatch.setattr(triton_epilogue, "_reported", set())
    monkeypatch.setattr(triton_epilogue, "_state", {"failed": None})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def warnings_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_fused_kernels_asked_for_on_the_cpu_are_reported_once(fresh_reports, caplog):
    model = GPEN(GPENConfig(size=32, channel_multiplier=1, narrow=0.125)).eval()
    model.fast_options = FastOptions(fused_kernels=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with caplog.at_level(logging.WARNING, logger=LOGGER), torch.no_grad():
        fused = model(x)
        model(x)  # every StyledConv of two forwards asked: one line
    assert warnings_from(caplog) == ["GPEN: the fused Triton epilogue cannot run (Triton runs on CUDA devices, not "
                                     "cpu); using the PyTorch form"]
    model.fast_options = FastOptions()
    with torch.no_grad():
        assert torch.equal(model(x), fused)  # the fallback is the PyTorch form, bit for bit


def test_triton_unusable_is_reported_once_with_the_reason(fresh_reports, caplog, monkeypatch):
    def broken():
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(triton_epilogue, "_kernel", broken)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so that the device is not what stops it
    t = torch.zeros(1, 4, 2, 2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not triton_epilogue.usable(t, t)
        assert not triton_epilogue.usable(t, t)
    assert warnings_from(caplog) == ["GPEN: the fused Triton epilogue cannot run (Triton is not usable here: "
                                     "ImportError: No module named 'triton'); using the PyTorch form"]


def test_dtype_and_layout_refusals_name_themselves(fresh_reports, caplog, monkeypatch):
    monkeypatch.setattr(triton_epilogue, "_kernel", lambda: None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from gpen_arch.ops.epilogue import ConvOutput

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not triton_epilogue.usable(torch.zeros(2, dtype=torch.float64))
        nchw = ConvOutput(torch.randn(1, 4, 6, 6), 4)
        assert not triton_epilogue.concat_epilogue(nchw, torch.randn(1, 4, 6, 6), torch.ones(1), torch.zeros(4),
                                                   torch.empty(1, 8, 6, 6))
    messages = warnings_from(caplog)
    assert len(messages) == 2
    assert "it takes float32, float16 and bfloat16, not torch.float64" in messages[0]
    assert "it takes channels-last tensors only" in messages[1]
