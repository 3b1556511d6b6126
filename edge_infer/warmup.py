"""Start-up work moved off the critical path (new process -> first result).

OpenCV builds its Lab conversion tables on the first BGR->Lab call (0.12 s measured here);
the image-statistics guard needs them for the first image. A daemon thread makes that first
call while the rest of the runtime imports and the onnxruntime session loads (OpenCV releases
the GIL), so on two or more cores the first result waits less for it.
"""

from __future__ import annotations

import os
import threading


def limit_blas_threads() -> None:
    """numpy's OpenBLAS starts one busy thread per core at import, for matrix products the
    runtime does not need in parallel: one thread, unless the user chose otherwise. Only
    effective before numpy is imported."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _build_tables() -> None:
    import cv2
    import numpy as np

    cv2.cvtColor(np.zeros((2, 2, 3), np.uint8), cv2.COLOR_BGR2LAB)


def start() -> threading.Thread:
    """Not a daemon: a process that ends within the first 0.1 s waits for it, because
    OpenCV aborts the process if the interpreter exits while a thread is inside it."""
    thread = threading.Thread(target=_build_tables, name="edge-infer-warmup", daemon=False)
    thread.start()
    return thread
