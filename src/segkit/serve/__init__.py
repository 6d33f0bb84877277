"""The web service: ``create_app(run)`` (FastAPI) and ``serve(run, options, host, port)``."""

from segkit.serve.app import ServeOptions, create_app, serve

__all__ = ["ServeOptions", "create_app", "serve"]
