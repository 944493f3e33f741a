"""Tidings: a real-time messaging hub for FastAPI."""
