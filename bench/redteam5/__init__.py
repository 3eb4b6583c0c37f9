"""redteam5: a blind red team on a mobile-first subscription program (see __main__.py)."""
