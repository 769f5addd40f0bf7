"""sksimplenet: SimpleNet image anomaly detection as a scikit-learn estimator."""

from .detector import SimpleNetDetector

__version__ = "0.1.0"
__all__ = ["SimpleNetDetector", "__version__"]
