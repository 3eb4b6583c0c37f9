"""A demo program with realistic traffic and planted fraud."""
