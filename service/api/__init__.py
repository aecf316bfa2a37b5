"""The HTTP face: app factory, routes, compiled scoring, cache and metrics."""
