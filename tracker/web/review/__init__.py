"""The finance review page."""
