"""End to end: real processes, the built wheel, a real browser."""
