"""Cancel inside the forward: the hook set with ``GPEN.between_blocks`` runs between blocks and strips, and a hook
that raises stops the forward before the next block (gpen_arch/interrupt.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import random_gpen

from gpen_arch.config import GPENConfig
from gpen_arch.interrupt import between_blocks, block_done
from gpen_arch.ops import winograd
from gpen_arch.runtime import bands as bands_module
from gpen_arch.runtime import fast_forward as fast_forward_module
from gpen_arch.runtime.fast_forward import fast_forward


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


def test_a_winograd_convolution_checks_between_its_chunks_and_stops_before_the_next(monkeypatch):
    """The largest convolutions of a GPEN-2048 decoder (seconds each on a CPU) run by Winograd in chunks of tile
    rows; Cancel is checked after each chunk, and the checks change nothing computed."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 40, 24).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 16, 3, 3) / 12, torch.randn(8)
    row_bytes = 36 * 16 * 6 * 4  # one row of 6 tiles' transformed input, float32
    plain = winograd.winograd_conv3x3(x, weight, bias, chunk_bytes=row_bytes)  # no hook: the form before
    products = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: (products.append(1), real_bmm(*a, **k))[1])
    checks = []
    with between_blocks(lambda: checks.append(len(products))):
        checked = winograd.winograd_conv3x3(x, weight, bias, chunk_bytes=row_bytes)
    assert torch.equal(checked, plain)  # bit for bit
    assert checks == list(range(1, 11))  # 10 rows of tiles, one per chunk: a check after each chunk's product
    for k in (1, 4, 9):
        products.clear()

        def hook(k=k):
            if len(products) == k:
                raise Cancelled

        with between_blocks(hook), pytest.raises(Cancelled):
            winograd.winograd_conv3x3(x, weight, bias, chunk_bytes=row_bytes)
        assert len(products) == k  # stopped at the k-th chunk's check, before the next chunk


def test_the_forward_checks_inside_its_winograd_convolutions(model, monkeypatch):
    """With the Winograd thresholds lowered so that this small model's decoder uses it, the plain forward checks
    between chunks too (more than its 16 block checks), gives the same output bit for bit with and without a hook,
    and a Cancel inside a convolution stops the forward there."""
    for name, value in (("MIN_IN_CHANNELS", 1), ("MIN_OUT_CHANNELS", 1), ("MIN_PIXELS", 16 * 16),
                        ("CHUNK_BYTES", 1)):
        monkeypatch.setattr(winograd, name, value)
    plan = model.plan("cpu").replace(banded=False, winograd=True)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    chunks = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: (chunks.append(1), real_bmm(*a, **k))[1])
    with torch.no_grad():
        plain = fast_forward(model, x, plan)
    per_forward = len(chunks)  # Winograd chunks (one batched product each) in a forward
    assert per_forward > 0
    checks = []  # at each check, the chunks run so far
    chunks.clear()
    with torch.no_grad(), model.between_blocks(lambda: checks.append(len(chunks))):
        checked = fast_forward(model, x, plan)
    assert torch.equal(checked, plain)
    assert len(checks) == 16 + per_forward  # every block, and after every Winograd chunk
    full = checks
    # a check inside a convolution: right after a chunk, with another chunk of the same convolution next
    k = next(i for i in range(2, len(full)) if full[i - 2] < full[i - 1] < full[i])  # 1-based index of that check
    checks, chunks[:] = [], []

    def hook() -> None:
        checks.append(len(chunks))
        if len(checks) == k:
            raise Cancelled

    with torch.no_grad(), model.between_blocks(hook), pytest.raises(Cancelled):
        fast_forward(model, x, plan)
    assert checks == full[:k] and len(chunks) == full[k - 1]  # stopped there: no chunk after the k-th check
