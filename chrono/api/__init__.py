"""The HTTP/WS API: quart-trio on hypercorn's trio worker, inside the service's nursery."""

from chrono.api.app import create_app
from chrono.api.context import ApiContext
from chrono.api.server import serve_http

__all__ = ["ApiContext", "create_app", "serve_http"]
