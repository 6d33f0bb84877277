"""The web service: ``create_app(run)`` (FastAPI) and ``serve(run, host, port)``."""

from segkit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
