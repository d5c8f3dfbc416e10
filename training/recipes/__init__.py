"""Reproducible training recipes: the demo model (synthetic data) and the NEU-DET model (real steel data)."""
