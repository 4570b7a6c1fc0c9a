"""The HTTP server: request handling (auth, bodies, problems), the ingest front door and the app's routes."""
