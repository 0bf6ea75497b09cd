"""JSON API routers, one per area; each can be mounted on its own."""
