"""Fraud signals, referrer graph, evidence model and anomaly detectors (a library: never imports
tracker)."""
