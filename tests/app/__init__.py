"""The application against a real (embedded) PostgreSQL, in process."""
