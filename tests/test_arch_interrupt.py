"""Cancel inside the forward: the hook set with ``GPEN.between_blocks`` runs between blocks and strips, and a hook
that raises stops the forward before the next block (gpen_arch/interrupt.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import random_gpen

from gpen_arch import bands as bands_module
from gpen_arch import fast_forward as fast_forward_module
from gpen_arch.config import GPENConfig
from gpen_arch.fast_forward import fast_forward
from gpen_arch.interrupt import block_done


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def model():
    return random_gpen(GPENConfig(size=128, channel_multiplier=1, narrow=0.0625))


def traced(model, monkeypatch, *, banded: bool, cancel_at: int | None = None) -> tuple[list[str], bool]:
    """A fast forward whose layer functions record "work" and whose hook records "check" (raising ``Cancelled`` at
    check ``cancel_at``). Returns the trace and whether the forward was cancelled."""
    trace: list[str] = []
    for name in ("_encoder_layer", "_styled_conv", "_to_rgb"):
        real = getattr(fast_forward_module, name)
        monkeypatch.setattr(fast_forward_module, name,
                            lambda *a, _real=real, **k: (trace.append("work"), _real(*a, **k))[1])

    def hook() -> None:
        trace.append("check")
        if trace.count("check") == cancel_at:
            raise Cancelled

    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        with torch.no_grad(), model.between_blocks(hook):
            fast_forward(model, x, model.plan("cpu").replace(banded=banded))
    except Cancelled:
        return trace, True
    finally:
        monkeypatch.undo()
    return trace, False


@pytest.mark.parametrize("banded", [False, True], ids=["plain", "strips"])
def test_a_raising_hook_stops_the_forward_before_the_next_block(model, monkeypatch, banded):
    if banded:
        monkeypatch.setattr(bands_module, "BAND_ELEMENTS", 1)  # 8-row strips: many checks inside one layer
    full, cancelled = traced(model, monkeypatch, banded=banded)
    if banded:
        monkeypatch.setattr(bands_module, "BAND_ELEMENTS", 1)
    checks = full.count("check")
    assert not cancelled and full[-1] == "check"
    # plain: the 6 encoder layers, and 2 per decoder step (after each of its two convolutions; 128 = 4 * 2**5):
    # 16; strips: one check each more
    assert checks == 16 if not banded else checks > 30
    if not banded:  # one check per block (a banded layer's last strip and the layer itself check back to back)
        assert all(full[i - 1] == "work" for i, entry in enumerate(full) if entry == "check")
    for k in (1, 4, checks // 2, checks - 1):
        partial, cancelled = traced(model, monkeypatch, banded=banded, cancel_at=k)
        if banded:
            monkeypatch.setattr(bands_module, "BAND_ELEMENTS", 1)
        # exactly k checks and nothing after the k-th: the same blocks as the full forward's first ones, then stop
        assert cancelled and partial.count("check") == k and partial == full[:len(partial)]
        assert partial[-1] == "check" and len(partial) < len(full)


def test_the_reference_forward_checks_between_layers_too(model):
    calls = []

    def hook():
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled

    x = torch.zeros(1, 3, 128, 128)
    with torch.no_grad(), model.between_blocks(hook), pytest.raises(Cancelled):
        model.reference_forward(x)
    assert len(calls) == 3


def test_the_hook_belongs_to_its_context_and_is_gone_after_the_block(model):
    seen = []
    with model.between_blocks(lambda: seen.append("main")):
        other = threading.Thread(target=block_done)  # another thread's context has no hook
        other.start()
        other.join()
        block_done()
    block_done()  # outside the block: nothing
    assert seen == ["main"]
    with torch.no_grad(), model.between_blocks(lambda: seen.append("model")):
        model(torch.zeros(1, 3, 128, 128))  # GPEN.forward (the plan's default path) checks too
    assert seen.count("model") >= 16
