"""A host app for tests that run it as a real uvicorn process (``uvicorn tests.hostapp.app:app``)."""
