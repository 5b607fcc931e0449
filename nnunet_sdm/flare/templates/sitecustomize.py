"""nnunet-sdm flare run: record torch.cuda.max_memory_allocated() at exit (then the real sitecustomize).

Put on the PYTHONPATH of predict.sh's processes; each process that initialised CUDA writes its peak into
``$NNUNET_SDM_GPU_PEAK_DIR/<pid>.peak``.
"""

import atexit as _atexit
import os as _os
import sys as _sys


def _nnunet_sdm_cuda_peak():
    torch = _sys.modules.get("torch")
    folder = _os.environ.get("NNUNET_SDM_GPU_PEAK_DIR")
    if torch is None or not folder:
        return
    try:
        if not torch.cuda.is_initialized():
            return
        peak = max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
        with open(_os.path.join(folder, f"{_os.getpid()}.peak"), "w") as f:
            f.write(str(int(peak)))
    except Exception:
        pass  # a measurement must never break the submission's run


_atexit.register(_nnunet_sdm_cuda_peak)
# hand over to a sitecustomize further down the path, if there is one
_here = _os.path.dirname(_os.path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
_me = _sys.modules.pop("sitecustomize")
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    _sys.modules.setdefault("sitecustomize", _me)
