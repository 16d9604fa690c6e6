"""The FastAPI model service."""
