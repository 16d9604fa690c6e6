"""socialads: predicts whether a social-network user buys after seeing an ad."""

__version__ = "0.1.0"
