"""How GPEN's inference forward runs fast: options resolved into a plan (``fast_plan.py``), the optimised forward
(``fast_forward.py``) with its strips (``bands.py``), the weights it derives and keeps (``weight_cache.py``), the CUDA
graph replaying it (``cuda_graph.py``), the memory estimate (``memory.py``) and the precision choice (``precision.py``).

Below the model: ``model.py`` (``GPEN``) imports these, never the other way; what needs the model takes it (or its
class) as an argument. The public names are ``gpen_arch``'s.
"""
