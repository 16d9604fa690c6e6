"""Monitoring of the serving champion: drift and live quality of the prediction log."""
