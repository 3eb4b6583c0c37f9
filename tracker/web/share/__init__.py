"""The share page (GET /s/{token}): views.py, its templates and static files."""
