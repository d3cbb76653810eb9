"""The one place that states how much a weight file may make this package read, allocate and compute.

Every file read from a models folder is untrusted: a 41-byte ``.pth`` can ask the unpickler for a 5 GiB bytearray, a
4.7 MB zip can inflate to 5 GiB, a 300-byte ``.onnx`` can fold to gigabytes of constants. So each reader inspects the
file first (zip directory, pickle opcodes, safetensors header, ONNX graph sizes; ``file_scan.py``, ``onnx_graph.py``)
and refuses, before anything is allocated, a file that needs more than the largest real GPEN checkpoint with a margin.

The yardstick is GPEN-BFR-2048, the largest released GPEN (``tests/data/gpen/keys/keys_2048.txt``): 201 tensors,
71,295,201 elements in all (285 MB as float32), the largest tensor 4,718,592 elements (18.9 MB as float32). Its ONNX
exports have about 3,400 nodes (measured: 2,261 nodes for a GPEN-256 and 2,633 for a GPEN-512 export, one upsampling
step more; GPEN-2048 has three more) and their constant folding creates about 0.7 elements per initializer element.
The face detectors and the parsing network this pack reads through the same code are smaller than GPEN-512.
"""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30

# ------------------------------------------------------------------------------------- PyTorch and safetensors files
#: Largest weight file read, and the most its records or storages may declare in all (uncompressed): 7x GPEN-2048's
#: 285 MB, room for a training checkpoint that keeps ``g_ema`` beside the generator and discriminator.
MAX_WEIGHT_FILE_BYTES = 2 * GiB
#: Largest single zip record / tensor storage / safetensors tensor: 6.8x GPEN-2048's largest tensor as float32.
MAX_RECORD_BYTES = 128 * MiB
#: Most elements one tensor may declare (its shape): the record budget in 4-byte elements.
MAX_TENSOR_ELEMENTS = MAX_RECORD_BYTES // 4
#: Most tensors (zip records, storages, safetensors entries) in one file: 20x GPEN-2048's 201.
MAX_TENSORS = 4096
#: Largest pickle part (``data.pkl`` of the zip format, the pickles before the data in the legacy format); a GPEN-2048
#: state dict's is about 20 KB.
MAX_PICKLE_BYTES = 16 * MiB
#: Largest safetensors JSON header; GPEN-2048's is about 20 KB.
MAX_SAFETENSORS_HEADER_BYTES = 16 * MiB
#: Largest Python ``bytes``/``bytearray`` a pickle may build from a length (a checkpoint needs none).
MAX_PICKLED_BUFFER_BYTES = 1 * MiB

# ------------------------------------------------------------------------------------------------------ ONNX files
#: Largest ONNX file (with its external data) read: GPEN-2048 as float32 is about 285 MB.
MAX_ONNX_BYTES = 1 * GiB
#: Largest ONNX graph without its weights that the model list's quick look reads (GPEN exports: well under 1 MiB).
MAX_ONNX_OUTLINE_BYTES = 64 * MiB
#: Most nodes in an ONNX graph: 6x the ~3,400 of a GPEN-2048 export (the structure match is linear in the graph).
MAX_ONNX_NODES = 20_000
#: Most initializers (GPEN exports have 130-280).
MAX_ONNX_INITIALIZERS = 20_000
#: Most inputs one ONNX node may take (GPEN exports: at most 6).
MAX_ONNX_NODE_INPUTS = 64
#: Most encoder layers a GPEN has (GPEN-2048: ecd0..ecd9).
MAX_ENCODER_LAYERS = 10
#: Largest tensor one constant-folding step may create (elements): 3.6x GPEN-2048's largest; bigger stays dynamic.
MAX_FOLD_ELEMENTS = 1 << 24
#: Most elements constant folding may create over a whole graph: 5.7x the ~47 million a GPEN-2048 export needs.
MAX_FOLD_TOTAL_ELEMENTS = 1 << 28
