"""Edge classifier for acute lymphoblastic leukemia screening on blood smear images.

Needs only numpy, OpenCV, onnxruntime and click; never TensorFlow.
"""

import os

# numpy's OpenBLAS starts one busy thread per core at import, for matrix products the runtime
# does not need in parallel (`import edge_infer` used 0.42-0.45 s of CPU with 4 BLAS threads,
# 0.17-0.23 s with one, measured here): one thread, unless the user chose otherwise. Only
# effective before numpy is imported, hence here.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from .classifier import Classifier, Failure, Prediction  # noqa: E402
from .errors import EdgeInferError, ImageError, ModelError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Classifier",
    "EdgeInferError",
    "Failure",
    "ImageError",
    "ModelError",
    "Prediction",
    "__version__",
]
