"""Programs, referrers and links: their settings, validation and SQL."""
