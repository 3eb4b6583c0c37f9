"""What runs on each click: redirect, journal, flusher, enrichment."""
