"""Fraud signals, referrer graph and anomaly scoring (a library: never imports tracker)."""
