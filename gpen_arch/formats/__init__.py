"""GPEN's file formats: reading weight files within budgets (``budgets.py``, ``file_scan.py``, ``checkpoint_file.py``),
the one reader by suffix and the model builder (``loading.py``), ONNX exports read by structure (``onnx_graph.py``,
``onnx_import.py``) and conversion to ``.safetensors`` (``convert.py``).

Above the network: ``loading.py`` builds a ``GPEN``; what a state dict must hold comes from ``gpen_arch/state_dict.py``,
which every reader here uses, so none of them imports another in a circle. The public names are ``gpen_arch``'s.
"""
