"""Touchpoints and attribution models (a library: never imports tracker)."""
