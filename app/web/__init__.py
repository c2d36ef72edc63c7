"""The browser client: static files at `/`, the voice catalogue, the client's settings."""
