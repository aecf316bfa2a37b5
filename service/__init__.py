"""Propensity service: the approved exercise_26 purchase-propensity GLM, trained, versioned and served."""

__all__ = ["__version__"]
__version__ = "1.0.0"
