"""Candidates, CV search, evaluation, MLflow tracking, registry and promotion gate."""
