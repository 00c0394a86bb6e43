"""Scoring generators on held-out pairs: the field's metrics, baselines, protocol, plots, portrait extras."""
