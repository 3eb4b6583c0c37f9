"""MaxMind-format geo lookups (a library: never imports tracker)."""
