"""sksimplenet: SimpleNet image anomaly detection as a scikit-learn estimator."""

from .detector import PAPER_PARAMS, SimpleNetDetector
from .persistence import ModelFileError, load

__version__ = "0.1.0"
__all__ = ["SimpleNetDetector", "PAPER_PARAMS", "ModelFileError", "load", "__version__"]
