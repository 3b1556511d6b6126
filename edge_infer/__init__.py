"""Edge classifier for acute lymphoblastic leukemia screening on blood smear images.

Needs only numpy, OpenCV, onnxruntime and click; never TensorFlow.
"""

from . import warmup

warmup.limit_blas_threads()
warmup.start()

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
