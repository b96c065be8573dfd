"""Envoy's signed POST routes: cap, verify, parse, call one domain function, answer.

The signature is checked on the raw bytes before anything is parsed or stored; the body is
then parsed once into what can be stored (web/json_body.py). An event carries the install's
whole saved config, so its settings are checked here too: out of range, the event is refused
(412) before anything is stored. Setup and dropdown routes carry a partial config, and are
how an admin fixes it, so they are not refused for it. Each route is a row of `ROUTES`;
handlers take `(ctx, request, **url_args)` and return an `Answer`.
"""

import logging
import time

from bottle import Bottle, request

import db
from daemon.access.intake import handle_event
from daemon.access.verification import verify_identity
from daemon.context import Context
from daemon.envoy.options import handle_options, handle_selected
from daemon.envoy.setup_steps import handle_step
from daemon.rules.request import Answer, BadRequest, EnvoyRequest
from daemon.rules.settings import Settings
from web.json_body import parse_body
from web.responses import json_response
from web.signature import signature_is_valid

log = logging.getLogger("envoy_proxy.web")


ROUTES = {
    "/envoy/events": handle_event,
    "/envoy/hooks/identity-verification": verify_identity,
    "/envoy/setup/<step>": handle_step,
    "/envoy/options/<name>": handle_options,
    "/envoy/selected/<name>": handle_selected,
}


def _read_body(cap: int) -> bytes | None:
    length = request.content_length
    if length is not None and length > cap:
        return None
    body = request.body.read(cap + 1)
    return None if len(body) > cap else body


def _parse(raw: bytes) -> EnvoyRequest:
    """The request, or BadRequest before anything is stored (see the module's docstring)."""
    envoy_request = EnvoyRequest.from_body(parse_body(raw), raw.decode())
    if envoy_request.event is not None:
        Settings.from_config(envoy_request.config)  # refuses a duration out of range
    return envoy_request


def _envoy_view(ctx: Context, handler):
    def view(**url_args):
        started = time.monotonic()
        raw = _read_body(ctx.config.max_body_bytes)
        if raw is None:
            return json_response(413, {"message": "request body too large"})
        if not signature_is_valid(
            ctx.config.client_secret, raw, request.get_header("X-Envoy-Signature")
        ):
            log.warning("rejected %s: missing or wrong X-Envoy-Signature", request.path)
            return json_response(401, {"message": "missing or wrong X-Envoy-Signature"})
        envoy_request = None
        try:
            envoy_request = _parse(raw)
            with db.database.connection_context():
                answer = handler(ctx, envoy_request, **url_args)
        except BadRequest as error:
            answer = Answer.message(error.status, str(error))
        log.info(
            "%s %s install=%s job=%s -> %d in %.0f ms",
            request.path,
            envoy_request.event or "" if envoy_request else "",
            envoy_request.install_id if envoy_request else "-",
            envoy_request.job_id if envoy_request else "-",
            answer.status,
            (time.monotonic() - started) * 1000,
        )
        return json_response(answer.status, answer.body)

    return view


def install(app: Bottle, ctx: Context) -> None:
    for path, handler in ROUTES.items():
        app.route(path, "POST", _envoy_view(ctx, handler))
