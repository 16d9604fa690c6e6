"""Prefect flows of socialads: data-prep, train and the parent pipeline."""
