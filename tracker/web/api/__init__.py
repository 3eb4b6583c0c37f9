"""The HTTP API under /api/v1: one module per resource, each adding its routes to the sub-app."""

API_PREFIX = "/api/v1"
