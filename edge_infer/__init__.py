"""Edge classifier for acute lymphoblastic leukemia screening on blood smear images.

Needs only numpy, OpenCV, onnxruntime and click; never TensorFlow.
"""

from .classifier import Classifier, Failure, Prediction
from .errors import EdgeInferError, ImageError, ModelError

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
