"""The Bottle application: Envoy's signed routes, health, and JSON errors everywhere."""

from bottle import Bottle

from daemon import __version__
from daemon.context import Context
from web import admin_routes, envoy_routes
from web.responses import error_body, json_response


def create_app(ctx: Context) -> Bottle:
    app = Bottle()
    app.default_error_handler = error_body
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
