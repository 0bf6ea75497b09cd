"""HTTP: the FastAPI app factory, API routers, pages, and middleware."""
