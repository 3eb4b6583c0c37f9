"""Fraud signals, referrer graph and evidence model (a library: never imports tracker)."""
