"""FastAPI routers: WebSocket endpoints, token issuing, admin broadcasts, publishing, stats, health, metrics."""
