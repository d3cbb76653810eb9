"""GPEN ONNX exports (ReActor's ``GPEN-BFR-*.onnx``, FaceFusion's ``gpen_bfr_*.onnx``) read back into the released
checkpoint layout, so ``load_gpen(read_state_dict("GPEN-BFR-512.onnx"))`` works like the ``.pth``.

Those files come from ``torch.onnx.export`` of the official code: most tensor names are anonymous and the
equalized-learning-rate scales are folded into the weights. So the weights are found by the graph's structure, not by
name. After constant folding (``onnx_graph.py``) every parameter-carrying operation is an *anchor*: a convolution
with a constant weight (an encoder layer, or a 4x4 FIR blur), a convolution whose weight is computed at run time (a
modulated convolution), a linear layer (Gemm/MatMul with a constant matrix), or the concatenation of an encoder
feature. Every other node (reshapes, pads, activations, demodulation arithmetic) only passes data on, so each value
in the graph depends on a small set of *nearest anchors*. GPEN is then matched anchor by anchor from the input:

    input -> ecd0 -> blur -> ecd1 -> ... -> ecd{L-2} -> final_linear -> PixelNorm -> style.1 .. style.8
    style.8 -> one modulation Gemm per modulated conv; const -> conv1 -> concat(e_4) -> to_rgb1, and per step
    concat -> convs[2j] (transposed) -> blur -> concat(e_r) -> convs[2j+1] -> concat(e_r) -> to_rgbs[j] (+ blur(skip))

Each step checks what feeds what, so a graph with GPEN's tensors but other wiring is refused. The folded scales are
then divided out (and the result nudged by an ulp where needed so that ``weight * scale`` gives the file's value back
bit for bit). Initializer names that happen to be GPEN keys are only a cross-check.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable

import numpy as np
import torch

from ..errors import GPENError, NotAGPENCheckpoint
from ..ops.activation import GAIN, NEGATIVE_SLOPE
from ..ops.upfirdn2d import make_blur_kernel
from ..state_dict import expected_shapes, infer_config, looks_like
from .budgets import MAX_ENCODER_LAYERS
from .onnx_graph import Node, OnnxGraph, read_onnx_graph

logger = logging.getLogger(__name__)

INPUT = -1  # the pseudo-anchor of the graph input
_MAX_NEAR = 16  # most parameter layers one value may depend on directly (GPEN's: at most 2)
_SHAPE_ONLY = {"Shape", "Size", "ConstantOfShape", "EyeLike"}  # outputs carry no data of their inputs
_ALL_DATA = {"Add", "Sub", "Mul", "Div", "Pow", "Concat", "Sum", "Max", "Min", "Mean", "Where", "MatMul", "Gemm"}
_PASS_THROUGH = {"Reshape", "Identity", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Tile", "Expand"}


class NotGPENWiring(NotAGPENCheckpoint):
    """Internal: a step of the structural match failed (the message says which)."""


def read_onnx_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The GPEN state dict (released key names, float32, blur kernels included) held by the ONNX file ``path``.

    Raises ``CheckpointReadError`` when the file cannot be read safely (see ``onnx_graph.read_onnx_graph``) and
    ``NotAGPENCheckpoint`` when it is not a GPEN FullGenerator export (the message says what was found instead)."""
    graph = read_onnx_graph(path)
    sd = _Matcher(graph).state_dict()
    config = infer_config(sd)
    expected = expected_shapes(config)
    wrong = sorted(set(expected) ^ set(sd)) + [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if wrong:  # the walk above checks every shape it relies on; this would be a gap in it
        raise NotAGPENCheckpoint(f"{graph.path.name}: the weights found do not form a GPEN-{config.size}: "
                                 f"{', '.join(wrong[:3])}")
    logger.info("%s: GPEN-%d read from ONNX (%s, opset %d)", graph.path.name, config.size, graph.producer,
                graph.opset)
    return {k: sd[k] for k in expected}


def onnx_not_gpen_reason(path: str | os.PathLike) -> str | None:
    """Why the ONNX file ``path`` is surely not a GPEN export, from a quick look at its graph (inputs, operators,
    module paths; no weights converted), or None when it may be one or cannot be read here (loading then decides and
    explains). For model lists that leave out the other networks kept in the same folder."""
    try:
        graph = read_onnx_graph(path, weights=False)
    except NotAGPENCheckpoint as exc:  # a graph far beyond GPEN's size
        return str(exc)
    except (GPENError, OSError):
        return None
    hint = _graph_looks_like(graph)
    dims = [d for _, d in graph.inputs]
    if not (len(dims) == 1 and len(dims[0]) == 4 and (dims[0][1] == 3 or isinstance(dims[0][1], str))):
        return "not a GPEN network: its inputs are " + ", ".join(f"{n} {d}" for n, d in graph.inputs) + (
            f"; this looks like {hint}" if hint else "")
    if hint:
        return f"not a GPEN network: this looks like {hint}"
    if not any(node.op == "ConvTranspose" for node in graph.nodes):
        return "not a GPEN network: it has no transposed (upsampling) convolutions"
    return None


def _graph_looks_like(graph: OnnxGraph) -> str | None:
    """What a non-GPEN ONNX graph looks like, from its inputs and module paths."""
    names = {n for n, _ in graph.inputs}
    if {"target", "source"} <= names:
        return "an InsightFace face swapper (inswapper)"
    if len(graph.inputs) == 2 and any(dims == [] or dims == [1] for _, dims in graph.inputs):
        return "a CodeFormer-style model (it takes a fidelity weight as a second input)"
    paths = set(graph.initializer_names)
    for node in graph.nodes:
        if node.name.startswith("/"):
            paths.add(".".join(part for part in node.name.strip("/").split("/")[:-1]))
    hint = looks_like(paths)  # the same table as a state dict's keys (state_dict.LOOKALIKES)
    if hint is not None:
        return hint
    if len(graph.inputs) == 1 and graph.inputs[0][1][-2:] == [112, 112]:
        return "a face-recognition (ArcFace-style) model"
    return None


def _unscale(effective: np.ndarray, scale: float) -> torch.Tensor:
    """``w`` such that ``w * scale`` (float32, as the network computes it) is ``effective``: the division, then a
    one-ulp nudge for the few elements where rounding would otherwise land next to the file's value."""
    target = np.array(effective, dtype=np.float32).reshape(np.shape(effective))  # a writable float32 copy
    if scale == 1.0:
        return torch.from_numpy(target)
    factor = np.float32(scale)  # torch multiplies a float32 tensor by a Python float in float32
    weight = target / np.float32(scale)  # float32: at most an ulp from the exact quotient, nudged below
    flat_weight, flat_target = weight.reshape(-1), target.reshape(-1)
    off = np.flatnonzero(flat_weight * factor != flat_target)
    for _ in range(3):
        if off.size == 0:
            break
        low = flat_weight[off] * factor < flat_target[off]
        flat_weight[off] = np.nextafter(flat_weight[off], np.where(low, np.inf, -np.inf).astype(np.float32))
        off = off[flat_weight[off] * factor != flat_target[off]]
    return torch.from_numpy(weight)


class _Matcher:
    """Walks GPEN's structure through the graph's anchors; ``state_dict()`` returns the weights it found."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.name = graph.path.name
        self.const = graph.constants
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(graph.nodes):
            for out in node.outputs:
                self.producer[out] = i
            for name in self._data_inputs(node):
                self.consumers.setdefault(name, []).append(i)
        self._refuse_obvious_mismatches()
        self.anchor_kind: dict[int, str] = {}
        self.near: dict[str, frozenset[int]] = {n: frozenset({INPUT}) for n, _ in graph.inputs}
        self.fed_by: dict[frozenset[int], list[int]] = {}  # nearest anchors -> the plain nodes that depend on them
        for i, node in enumerate(graph.nodes):
            kind = self._classify(node)
            if kind is not None:
                self.anchor_kind[i] = kind
            inputs = frozenset().union(*(self.near.get(n, frozenset()) for n in self._data_inputs(node)))
            if len(inputs) > _MAX_NEAR:
                raise NotAGPENCheckpoint(
                    f"not a GPEN network: in {self.name}, node {node.name or node.op} combines the outputs of "
                    f"{len(inputs)} parameter layers at once (GPEN combines at most {_MAX_NEAR})")
            if kind is None:
                self.fed_by.setdefault(inputs, []).append(i)
            for out in node.outputs:
                self.near[out] = frozenset({i}) if kind is not None else inputs
        self.sd: dict[str, torch.Tensor] = {}
        self.modulation: dict[int, int] = {}  # modulated convolution -> its modulation (linear) layer
        self.matched: set[int] = set()  # modulated convolutions placed in GPEN's decoder
        self.names: dict[str, str] = {}  # state-dict key -> the initializer it came from (the name hint)
        # (kind, port) -> nearest anchors of that input -> the anchors of that kind: every lookup of the walk is a
        # dict access, so matching is linear in the graph's size (a scan per lookup made hostile graphs quadratic)
        self._by_feed: dict[tuple[str, int], dict[frozenset[int], list[int]]] = {}
        self._concats: dict[tuple[frozenset, frozenset], list[int]] | None = None

    # ------------------------------------------------------------------------------------------- graph queries
    def _data_inputs(self, node: Node) -> list[str]:
        if node.op in _SHAPE_ONLY:
            return []
        if node.op in _ALL_DATA or node.op in ("Conv", "ConvTranspose"):
            return [n for n in node.inputs if n]
        return [node.inputs[0]] if node.inputs and node.inputs[0] else []

    def _is_const(self, name: str) -> bool:
        return name in self.const

    def _classify(self, node: Node) -> str | None:
        if node.op in ("Conv", "ConvTranspose") and len(node.inputs) > 1:
            weight = node.inputs[1]
            if not self._is_const(weight):
                return "modconv"
            w = self.const[weight]
            if w.ndim == 4 and w.shape[1] == 1 and w.shape[2:] == (4, 4) and node.attrs.get("group", 1) == w.shape[0]:
                return "blur"
            return "conv" if node.op == "Conv" else None
        if node.op in ("Gemm", "MatMul") and len(node.inputs) > 1 and self._is_const(node.inputs[1]) \
                and self.const[node.inputs[1]].ndim == 2 and not self._is_const(node.inputs[0]):
            return "linear"
        if node.op == "Concat":
            fed = [n for n in node.inputs if n and not self._is_const(n) and self.near.get(n)]
            if len(fed) >= 2:
                return "concat"
        return None

    def _anchors(self, kind: str, fed_by: Iterable[int], *, port: int = 0) -> list[int]:
        """Anchors of ``kind`` whose data input ``port`` depends on exactly the anchors ``fed_by``."""
        index = self._by_feed.get((kind, port))
        if index is None:
            index = self._by_feed[(kind, port)] = {}
            for i, k in self.anchor_kind.items():
                inputs = self.graph.nodes[i].inputs
                if k == kind and len(inputs) > port:
                    index.setdefault(self.near.get(inputs[port], frozenset()), []).append(i)
        return list(index.get(frozenset(fed_by), ()))

    def _one(self, found: list[int], what: str) -> int:
        if len(found) == 1:
            return found[0]
        if not found:
            raise NotGPENWiring(f"found no {what}")
        names = ", ".join(self.graph.nodes[i].name or self.graph.nodes[i].op for i in found[:3])
        raise NotGPENWiring(f"found {len(found)} candidates for {what} ({names})")

    def _chain(self, index: int) -> list[Node]:
        """The nodes that follow anchor ``index`` one after the other (each the only data consumer of the last),
        up to the next anchor or fork: where its bias and activation live."""
        chain, current = [], self.graph.nodes[index].outputs[0]
        while True:
            users = [u for u in self.consumers.get(current, []) if self.graph.nodes[u].op not in _SHAPE_ONLY]
            if len(users) != 1 or users[0] in self.anchor_kind:
                return chain
            node = self.graph.nodes[users[0]]
            chain.append(node)
            current = node.outputs[0]

    def _const_operand(self, node: Node) -> tuple[np.ndarray, str] | None:
        consts = [n for n in node.inputs[:2] if n and self._is_const(n)]
        return (self.const[consts[0]], consts[0]) if len(consts) == 1 else None

    def _bias_and_activation(self, index: int, channels: int, what: str, *, activated: bool = True) -> np.ndarray:
        """The constant added after anchor ``index`` (``[C]``, ``[1, C]`` or ``[1, C, 1, 1]`` in the file) and a
        check that ``sqrt(2) * leaky_relu(., 0.2)`` follows when ``activated``."""
        chain = self._chain(index)
        bias = None
        for node in chain:
            if node.op == "Add" and (found := self._const_operand(node)) is not None:
                bias = found[0]
                break
        if bias is None or bias.size != channels:
            raise NotGPENWiring(f"{what}: no bias of {channels} channels is added after it")
        if activated:
            ops = [(n.op, n) for n in chain]
            relu = [n for op, n in ops if op == "LeakyRelu"]
            gains = [c[0] for op, n in ops if op == "Mul" and (c := self._const_operand(n)) is not None]
            if not relu or not math.isclose(relu[0].attrs.get("alpha", 0.01), NEGATIVE_SLOPE, rel_tol=1e-6) or \
                    not any(g.size == 1 and math.isclose(float(g.reshape(-1)[0]), GAIN, rel_tol=1e-3) for g in gains):
                raise NotGPENWiring(f"{what}: not followed by GPEN's sqrt(2) * leaky_relu(x + b, 0.2)")
        return bias.reshape(channels).astype(np.float32)

    # --------------------------------------------------------------------------------------------- refusals
    def _refuse_obvious_mismatches(self) -> None:
        graph = self.graph
        random = sorted({n.op for n in graph.nodes if n.op.startswith("Random")})
        if random:
            raise NotAGPENCheckpoint(
                f"{self.name} draws random numbers ({', '.join(random)}): that is the official FullGenerator_SR layout "
                "(input smaller than output, random noise in the extra layers) or another model; only FullGenerator "
                "exports (input size = output size, as GPEN-BFR-256/512/1024/2048) can be loaded"
            )
        image_inputs = [(n, d) for n, d in graph.inputs if len(d) == 4 and (d[1] == 3 or isinstance(d[1], str))]
        if len(graph.inputs) != 1 or not image_inputs:
            hint = _graph_looks_like(graph)
            found = ", ".join(f"{n} {d}" for n, d in graph.inputs) or "none"
            raise NotAGPENCheckpoint(
                f"not a GPEN network: a GPEN export has one input [1, 3, S, S]; {self.name} has {found}"
                + (f"; this looks like {hint}" if hint else "")
            )
        dims_in = image_inputs[0][1]
        for _, dims_out in graph.outputs:
            if len(dims_out) == 4 and all(isinstance(d, int) for d in dims_out[2:] + dims_in[2:]) \
                    and dims_out[2:] != dims_in[2:]:
                raise NotAGPENCheckpoint(
                    f"{self.name} maps a {dims_in[3]}x{dims_in[2]} input to a {dims_out[3]}x{dims_out[2]} output: that "
                    "is the official FullGenerator_SR layout, which this loader does not support (only FullGenerator, "
                    "input size = output size, as GPEN-BFR-256/512/1024/2048)"
                )

    # ------------------------------------------------------------------------------------------------ matching
    def state_dict(self) -> dict[str, torch.Tensor]:
        modconvs = [i for i, k in self.anchor_kind.items() if k == "modconv"]
        hint = _graph_looks_like(self.graph)
        if hint or not modconvs or not any(self.graph.nodes[i].op == "ConvTranspose" for i in modconvs):
            raise NotAGPENCheckpoint(
                f"not a GPEN network: {self.name} has "
                + (f"{len(modconvs)} modulated convolutions" if modconvs else "no modulated convolutions (StyleGAN2 "
                   "layers whose weights are computed from a style)")
                + (f"; this looks like {hint}" if hint else "; GPEN ONNX exports are GPEN-BFR-*.onnx / gpen_bfr_*.onnx")
            )
        try:
            encoder = self._match_encoder()
            style = self._match_mapping(encoder[-1])
            self._match_decoder(encoder, style)
            self._check_all_used()
            self._check_name_hints()
        except NotGPENWiring as exc:
            raise NotAGPENCheckpoint(
                f"{self.name} looks like a GPEN export, but its wiring is not GPEN's: {exc}. It may be a modified "
                "or damaged export; the original GPEN-BFR .onnx/.pth files load"
            ) from None
        return self.sd

    def _put(self, key: str, value: torch.Tensor, source: str | None = None) -> None:
        self.sd[key] = value.contiguous()
        if source is not None:
            self.names[key] = self.graph.sources.get(source, source)

    def _match_encoder(self) -> list[int]:
        layers: list[int] = []
        first = self._one([i for i in self._anchors("conv", {INPUT})
                           if self.const[self.graph.nodes[i].inputs[1]].shape[1:] == (3, 1, 1)],
                          "first encoder layer (ecd0: a 1x1 convolution of the 3-channel input)")
        self._encoder_layer(0, first, kernel=1, stride=1, in_channels=3)
        layers.append(first)
        while True:
            blurs = self._anchors("blur", {layers[-1]})
            if not blurs:
                break
            if len(layers) >= MAX_ENCODER_LAYERS:
                raise NotGPENWiring(f"the encoder has more than {MAX_ENCODER_LAYERS} layers (GPEN-2048 has "
                                    f"{MAX_ENCODER_LAYERS})")
            blur = self._one(blurs, f"blur before ecd{len(layers)}")
            self._check_blur(blur, gain=1.0, what=f"ecd{len(layers)}")
            conv = self._one(self._anchors("conv", {blur}), f"ecd{len(layers)} (a stride-2 3x3 convolution)")
            previous = self.const[self.graph.nodes[layers[-1]].inputs[1]].shape[0]
            self._encoder_layer(len(layers), conv, kernel=3, stride=2, in_channels=previous)
            layers.append(conv)
        if len(layers) < 3:
            raise NotGPENWiring(f"the encoder has {len(layers)} layers; GPEN-16 and up have at least 3")
        return layers

    def _encoder_layer(self, i: int, index: int, *, kernel: int, stride: int, in_channels: int) -> None:
        node = self.graph.nodes[index]
        weight = self.const[node.inputs[1]]
        pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
        if weight.ndim != 4 or weight.shape[1:] != (in_channels, kernel, kernel) or \
                list(node.attrs.get("strides", [1, 1])) != [stride, stride] or any(pads):
            raise NotGPENWiring(
                f"ecd{i} should be a {kernel}x{kernel} stride-{stride} convolution of {in_channels} channels without "
                f"padding, found weight {list(weight.shape)}, strides {node.attrs.get('strides')}, pads {pads}"
            )
        out = weight.shape[0]
        prefix = f"ecd{i}.0." + ("0." if i == 0 else "1.")
        self._put(prefix + "weight", _unscale(weight, 1 / math.sqrt(in_channels * kernel * kernel)), node.inputs[1])
        fused = self.const.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if fused is not None and fused.size == out:  # an optimiser moved the activation's bias into the conv
            bias = fused.reshape(out).astype(np.float32)
        else:
            bias = self._bias_and_activation(index, out, f"ecd{i}")
        self._put(f"ecd{i}.0." + ("1.bias" if i == 0 else "2.bias"), torch.from_numpy(bias))
        if i > 0:
            self._put(f"ecd{i}.0.0.kernel", make_blur_kernel(gain=1.0))

    def _check_blur(self, index: int, *, gain: float, what: str) -> None:
        kernel = self.const[self.graph.nodes[index].inputs[1]].astype(np.float32)
        expected = make_blur_kernel(gain=gain).numpy()
        if not np.allclose(kernel.reshape(-1, 4, 4), expected, rtol=1e-3, atol=1e-6):
            raise NotGPENWiring(f"the FIR blur at {what} is not GPEN's [1, 3, 3, 1] kernel with gain {gain:g}")

    def _linear(self, index: int, key: str, *, lr_mul: float, activated: bool, what: str) -> tuple[int, int]:
        """Store the linear layer ``index`` as ``key.weight [out, in]`` / ``key.bias [out]``; returns (in, out)."""
        node = self.graph.nodes[index]
        matrix = self.const[node.inputs[1]].astype(np.float32)
        if node.op == "Gemm":
            if node.attrs.get("transA", 0):
                raise NotGPENWiring(f"{what}: a Gemm with a transposed input")
            alpha = node.attrs.get("alpha", 1.0)
            matrix = matrix * np.float32(alpha) if alpha != 1.0 else matrix
            weight = matrix if node.attrs.get("transB", 0) else matrix.T
        else:
            weight = matrix.T  # MatMul: x @ W^T
        out_dim, in_dim = weight.shape
        if len(node.inputs) > 2 and node.inputs[2]:
            bias = self.const.get(node.inputs[2])
            if bias is None or bias.size != out_dim:
                raise NotGPENWiring(f"{what}: its bias is not a constant of {out_dim} values")
            bias = bias.reshape(out_dim).astype(np.float32) * np.float32(node.attrs.get("beta", 1.0))
            if activated:
                self._bias_and_activation_check_only(index, what)
        else:
            bias = self._bias_and_activation(index, out_dim, what, activated=activated)
        self._put(f"{key}.weight", _unscale(weight, lr_mul / math.sqrt(in_dim)), node.inputs[1])
        self._put(f"{key}.bias", _unscale(bias, lr_mul), node.inputs[2] if len(node.inputs) > 2 else None)
        return in_dim, out_dim

    def _bias_and_activation_check_only(self, index: int, what: str) -> None:
        chain = self._chain(index)
        if not any(n.op == "LeakyRelu" for n in chain):
            raise NotGPENWiring(f"{what}: not followed by a leaky ReLU")

    def _match_mapping(self, last_encoder: int) -> int:
        final = self._one(self._anchors("linear", {last_encoder}), "final_linear (the encoder's 4x4 output to a code)")
        c4 = self.const[self.graph.nodes[last_encoder].inputs[1]].shape[0]
        in_dim, style_dim = self._linear(final, "final_linear.0", lr_mul=1.0, activated=True, what="final_linear")
        if in_dim != 16 * c4:
            raise NotGPENWiring(f"final_linear takes {in_dim} values, not the 16 x {c4} of the 4x4 encoder output")
        if not any(self.graph.nodes[i].op in ("ReduceMean", "ReduceSum", "ReduceL2")
                   for i in self.fed_by.get(frozenset({final}), [])):
            raise NotGPENWiring("no PixelNorm between final_linear and the mapping network")
        previous, layer = final, 0
        while True:
            nxt = self._anchors("linear", {previous})
            if len(nxt) != 1:
                break
            layer += 1
            in_dim, out_dim = self._linear(nxt[0], f"generator.style.{layer}", lr_mul=0.01, activated=True,
                                           what=f"generator.style.{layer}")
            if (in_dim, out_dim) != (style_dim, style_dim):
                raise NotGPENWiring(f"mapping layer {layer} is {in_dim}->{out_dim}, not {style_dim}->{style_dim}")
            previous = nxt[0]
        if layer == 0:
            raise NotGPENWiring("no mapping network after final_linear")
        return previous

    def _match_decoder(self, encoder: list[int], style: int) -> None:
        for mod in self._anchors("linear", {style}):
            users = self._anchors("modconv", {mod}, port=1)
            self.modulation[self._one(users, "modulated convolution fed by a modulation layer")] = mod
        features = encoder[::-1]  # e_4 first
        conv1 = self._one([i for i in self.anchor_kind if self.anchor_kind[i] == "modconv"
                           and not self.near.get(self.graph.nodes[i].inputs[0])],
                          "generator.conv1 (the modulated convolution of the learned 4x4 constant)")
        self._put("generator.input.input", self._constant_input(conv1))
        c4 = self.sd["generator.input.input"].shape[1]
        concat = self._styled_conv("generator.conv1", conv1, in_channels=c4, upsample=False, feature=features[0])
        rgb = self._to_rgb("generator.to_rgb1", concat, channels=self.sd["generator.conv1.activate.bias"].numel())
        skip = frozenset({rgb})
        step = 0
        while True:
            ups = [i for i in self._anchors("modconv", {concat}) if self.graph.nodes[i].op == "ConvTranspose"]
            if not ups:
                break
            if step + 1 >= len(features):
                raise NotAGPENCheckpoint(
                    f"{self.name}: its decoder has more upsampling steps than its encoder has layers: that is the "
                    "official FullGenerator_SR layout (input smaller than output), which this loader does not support"
                )
            up = self._one(ups, f"generator.convs.{2 * step} (an upsampling modulated convolution)")
            previous = self.sd[f"generator.convs.{2 * step - 1}.activate.bias" if step else
                               "generator.conv1.activate.bias"].numel()
            concat = self._styled_conv(f"generator.convs.{2 * step}", up, in_channels=previous, upsample=True,
                                       feature=features[step + 1])
            channels = self.sd[f"generator.convs.{2 * step}.activate.bias"].numel()
            second = self._one(
                [i for i in self._anchors("modconv", {concat}) if self.graph.nodes[i].op == "Conv"
                 and i in self.modulation and self._modconv_kernel(i) == 3],
                f"generator.convs.{2 * step + 1} (a 3x3 modulated convolution after generator.convs.{2 * step})")
            concat = self._styled_conv(f"generator.convs.{2 * step + 1}", second, in_channels=channels,
                                       upsample=False, feature=features[step + 1])
            rgb = self._to_rgb(f"generator.to_rgbs.{step}", concat, channels=channels)
            blur = self._one(self._anchors("blur", skip), f"skip upsampling (FIR blur) of generator.to_rgbs.{step}")
            self._check_blur(blur, gain=4.0, what=f"generator.to_rgbs.{step}")
            self._put(f"generator.to_rgbs.{step}.upsample.kernel", make_blur_kernel(gain=4.0))
            skip = frozenset({rgb, blur})
            if skip not in self.fed_by:
                raise NotGPENWiring(f"generator.to_rgbs.{step} does not add the upsampled previous image")
            step += 1
        if step + 1 != len(features):
            raise NotGPENWiring(f"the encoder has {len(features)} layers but the decoder {step} upsampling steps "
                                f"(GPEN has one fewer)")
        outputs = [self.near.get(name, frozenset()) for name, _ in self.graph.outputs]
        if skip not in outputs:
            raise NotGPENWiring(f"the graph's output is not the last to_rgb image (generator.to_rgbs.{step - 1})")

    def _modconv_kernel(self, index: int) -> int:
        return int(self._modulated_weight(index, "a modulated convolution").shape[-1])

    def _modulated_weight(self, index: int, what: str) -> np.ndarray:
        """The folded ``[1, out, in, k, k]`` weight multiplied by the style inside modulated conv ``index``."""
        mod = self.modulation.get(index)
        if mod is None:
            raise NotGPENWiring(f"{what}: its weight is not computed from a modulation layer")
        found = []
        for i in self.fed_by.get(frozenset({mod}), []):
            node = self.graph.nodes[i]
            if node.op == "Mul" and (c := self._const_operand(node)) is not None and c[0].ndim >= 4:
                found.append(c)
        if len(found) != 1:
            raise NotGPENWiring(f"{what}: found {len(found)} style-modulated weights, expected 1")
        weight, name = found[0]
        self._last_weight_name = name
        return weight.reshape((1,) + weight.shape[-4:]) if weight.ndim == 4 else weight

    def _demodulates(self, index: int) -> bool:
        mod = self.modulation[index]
        return any(self.graph.nodes[i].op in ("ReduceSum", "ReduceSumSquare", "ReduceL2")
                   for i in self.fed_by.get(frozenset({mod}), []))

    def _modulated_conv(self, key: str, index: int, *, in_channels: int, kernel: int, upsample: bool,
                        demodulate: bool) -> int:
        """Store ``key.weight`` and ``key.modulation.*``; returns the output channels."""
        node = self.graph.nodes[index]
        weight = self._modulated_weight(index, key)
        _, out, inp, kh, kw = weight.shape
        is_transposed = node.op == "ConvTranspose"
        strides = list(node.attrs.get("strides", [1, 1]))
        pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
        expected_pads = [0] * 4 if upsample else [kernel // 2] * 4
        if (inp, kh, kw) != (in_channels, kernel, kernel) or is_transposed != upsample or \
                strides != ([2, 2] if upsample else [1, 1]) or pads != expected_pads:
            raise NotGPENWiring(
                f"{key} should be a {kernel}x{kernel} modulated {'transposed ' if upsample else ''}convolution of "
                f"{in_channels} channels; found {node.op} weight {list(weight.shape)}, strides {strides}, pads {pads}"
            )
        if self._demodulates(index) != demodulate:
            raise NotGPENWiring(f"{key} {'lacks' if demodulate else 'has'} the demodulation GPEN uses there")
        self._put(f"{key}.conv.weight", _unscale(weight, 1 / math.sqrt(in_channels * kernel * kernel)),
                  self._last_weight_name)
        _, mod_out = self._linear(self.modulation[index], f"{key}.conv.modulation", lr_mul=1.0, activated=False,
                                  what=f"{key} modulation")
        self.matched.add(index)
        if mod_out != in_channels:
            raise NotGPENWiring(f"{key}: its modulation gives {mod_out} styles for {in_channels} input channels")
        return out

    def _styled_conv(self, key: str, index: int, *, in_channels: int, upsample: bool, feature: int) -> int:
        """A StyledConv: modulated 3x3 conv (+ blur), concatenation of the scaled encoder ``feature``, biased lrelu.
        Returns the concatenation's anchor."""
        out = self._modulated_conv(key, index, in_channels=in_channels, kernel=3, upsample=upsample, demodulate=True)
        source = index
        if upsample:
            source = self._one(self._anchors("blur", {index}), f"FIR blur after {key}")
            self._check_blur(source, gain=4.0, what=key)
            self._put(f"{key}.conv.blur.kernel", make_blur_kernel(gain=4.0))
        if self._concats is None:
            self._concats = {}
            for i, k in self.anchor_kind.items():
                if k == "concat" and (parts := self._concat_parts(i)) is not None:
                    self._concats.setdefault(parts, []).append(i)
        concat = self._one(list(self._concats.get((frozenset({source}), frozenset({feature})), ())),
                           f"concatenation of {key}'s output with its encoder feature")
        noise = self._noise_weight(concat, feature, key)
        self._put(f"{key}.noise.weight", torch.from_numpy(noise[0].reshape(1).astype(np.float32)), noise[1])
        node = self.graph.nodes[concat]
        if node.attrs.get("axis") not in (1, -3):
            raise NotGPENWiring(f"{key}: the encoder feature is concatenated on axis {node.attrs.get('axis')}, not 1")
        bias = self._bias_and_activation(concat, 2 * out, f"{key} activation")
        self._put(f"{key}.activate.bias", torch.from_numpy(bias))
        return concat

    def _concat_parts(self, index: int) -> tuple[frozenset, frozenset] | None:
        inputs = [n for n in self.graph.nodes[index].inputs if n]
        if len(inputs) != 2:
            return None
        return self.near.get(inputs[0], frozenset()), self.near.get(inputs[1], frozenset())

    def _noise_weight(self, concat: int, feature: int, key: str) -> tuple[np.ndarray, str]:
        name = self.graph.nodes[concat].inputs[1]
        while name in self.producer and self.graph.nodes[self.producer[name]].op in _PASS_THROUGH:
            name = self.graph.nodes[self.producer[name]].inputs[0]
        node = self.graph.nodes[self.producer[name]] if name in self.producer else None
        found = self._const_operand(node) if node is not None and node.op == "Mul" else None
        if found is None or found[0].size != 1:
            raise NotGPENWiring(f"{key}: the encoder feature is not scaled by one learned weight before the concat")
        return found

    def _to_rgb(self, key: str, concat: int, *, channels: int) -> int:
        rgb = self._one([i for i in self._anchors("modconv", {concat}) if self.graph.nodes[i].op == "Conv"
                         and i in self.modulation and self._modconv_kernel(i) == 1], f"{key} (a 1x1 modulated conv)")
        out = self._modulated_conv(key, rgb, in_channels=channels, kernel=1, upsample=False, demodulate=False)
        if out != 3:
            raise NotGPENWiring(f"{key} gives {out} channels, not 3 (RGB)")
        node = self.graph.nodes[rgb]
        fused = self.const.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if fused is not None:  # the bias folded into the convolution ([3]): an Add after it is optional
            added = [found[0] for n in self._chain(rgb)
                     if n.op == "Add" and (found := self._const_operand(n)) is not None and found[0].size == 3]
            bias = fused.reshape(3).astype(np.float32) + (added[0].reshape(3).astype(np.float32) if added else 0)
        else:
            bias = self._bias_and_activation(rgb, 3, key, activated=False)
        self._put(f"{key}.bias", torch.from_numpy(bias.reshape(1, 3, 1, 1)))
        return rgb

    def _constant_input(self, conv1: int) -> torch.Tensor:
        name = self.graph.nodes[conv1].inputs[0]
        while not self._is_const(name):
            producer = self.producer.get(name)
            if producer is None or self.graph.nodes[producer].op not in _PASS_THROUGH:
                raise NotGPENWiring("generator.conv1 does not start from a learned constant")
            name = self.graph.nodes[producer].inputs[0]
        value = self.const[name].astype(np.float32)
        channels = self._modulated_weight(conv1, "generator.conv1").shape[2]
        if value.size % (channels * 16):
            raise NotGPENWiring(f"the learned constant has {value.size} values, not {channels} x 4 x 4")
        self.names["generator.input.input"] = self.graph.sources.get(name, name)
        return torch.from_numpy(value.reshape(-1, channels, 4, 4)[:1].copy())

    # ---------------------------------------------------------------------------------------------- checks
    def _check_all_used(self) -> None:
        unused = [i for i, k in self.anchor_kind.items() if k == "modconv" and i not in self.matched]
        if unused:
            raise NotGPENWiring(f"{len(unused)} modulated convolution(s) are not part of GPEN's decoder "
                                f"(first: {self.graph.nodes[unused[0]].name or 'unnamed'})")

    def _check_name_hints(self) -> None:
        """Initializers named like GPEN keys must sit where the structure puts that key (or hold the same values:
        exporters merge identical tensors under one name)."""
        agree = 0
        for key, source in self.names.items():
            if source == key:
                agree += 1
            elif source in self.sd and _same_kind(source, key) and not torch.equal(self.sd[source], self.sd[key]):
                raise NotGPENWiring(f"the initializer named {source} feeds the place of {key}")
        logger.debug("%s: %d of %d weights found by structure also carry their GPEN name", self.name, agree,
                     len(self.names))


def _same_kind(a: str, b: str) -> bool:
    """Two keys of the same role in different layers (both noise weights, both conv weights, ...)."""
    return re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b)
