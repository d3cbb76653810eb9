"""Cancel inside a forward: a hook the forward calls between its blocks, set for a context by the caller.

A full-size GPEN-2048 forward takes 15-40 s on a CPU; a host that checks for Cancel only between faces answers a minute
late. So the forward calls ``block_done()`` after every encoder layer, decoder step and, where layers run in strips
(``bands.py``), after every strip, and the CPU's Winograd convolutions (``ops/winograd.py``, the largest 3x3 decoder
convolutions) call it between their chunks of tile rows. It calls whatever hook the caller set with
``between_blocks(hook)`` for the current context (``contextvars``: a thread or task of its own sees only its own hook),
or nothing. The hook is a plain host-side callable: it may raise (a host's "interrupted" exception,
``KeyboardInterrupt``) to abandon the forward, and it must not read tensors, so on a GPU it adds no synchronisation; the
kernels already queued finish on their own. A CUDA graph (``cuda_graph.py``) replays in one call and is not interrupted
inside (a few ms per face on a GPU); its capture runs without the hook, so a Cancel during capture cannot leave half a
graph.

The hook is passed this way, rather than as a forward argument, so ``model(x)`` keeps its signature for every caller
(ONNX export, ``torch.compile``, the reference forward) and a host needs no knowledge of the network's structure:
``with model.between_blocks(check): model(x)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_HOOK: ContextVar[Callable[[], None] | None] = ContextVar("gpen_arch_between_blocks", default=None)


@contextlib.contextmanager
def between_blocks(hook: Callable[[], None] | None) -> Iterator[None]:
    """Within the block, forwards in this context call ``hook()`` between their blocks (None: no hook)."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def block_done() -> None:
    """Called by the forward after each block: runs the context's hook, if any (it may raise)."""
    hook = _HOOK.get()
    if hook is not None:
        hook()
