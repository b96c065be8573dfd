"""The Bottle application: Envoy's signed routes, health, and JSON errors everywhere."""

import logging

from bottle import Bottle

import db
from daemon import __version__
from daemon.context import Context
from web import admin_routes, envoy_routes
from web.responses import error_body, json_response

log = logging.getLogger("envoy_proxy.web")


def create_app(ctx: Context) -> Bottle:
    app = Bottle()
    app.default_error_handler = error_body
    envoy_routes.install(app, ctx)
    admin_routes.install(app, ctx)
    app.route("/healthz", "GET", lambda: healthz())
    return app


def healthz():
    try:
        with db.database.connection_context():
            version = db.schema_version()
    except Exception as error:  # the probe must answer whatever broke
        log.warning("health check: database unavailable: %s", error)
        return json_response(503, {"status": "error", "message": "database unavailable"})
    return json_response(200, {"status": "ok", "version": __version__, "schema": version})
