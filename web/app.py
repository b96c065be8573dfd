"""The Bottle application: Envoy's signed routes, health, and JSON errors everywhere."""

import functools
import logging

from bottle import Bottle, HTTPResponse, request

from daemon import __version__
from daemon.context import Context
from web import admin_routes, envoy_routes
from web.responses import INTERNAL_ERROR, error_body, json_response

log = logging.getLogger("envoy_proxy.web")


def log_crashes(callback):
    """Bottle plugin: a route that raised is logged (so its traceback is masked, daemon/logs.py)
    and answered 500 in JSON. Bottle's own catch-all would print the traceback, unmasked, to
    the server's error stream."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HTTPResponse:
            raise  # Bottle's way to answer early, not a crash
        except Exception:
            log.exception("%s %s crashed", request.method, request.path)
            return json_response(500, {"message": INTERNAL_ERROR})

    return wrapper


def create_app(ctx: Context) -> Bottle:
    app = Bottle()
    app.default_error_handler = error_body
    app.install(log_crashes)
    envoy_routes.install(app, ctx)
    admin_routes.install(app, ctx)
    app.route("/healthz", "GET", lambda: healthz(ctx))
    return app


def healthz(ctx: Context):
    """200 while due work gets done, else 503 with the reasons (`daemon.health`).

    Open to anyone who reaches it: the reasons are the summaries, never error texts.
    """
    verdict = ctx.health.check()
    facts = {"version": __version__, "schema": verdict.schema}
    if verdict.healthy:
        return json_response(200, {"status": "ok", **facts})
    return json_response(503, {"status": "unhealthy", "reasons": verdict.summaries(), **facts})
