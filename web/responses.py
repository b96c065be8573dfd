"""JSON answers for every status, including the errors Bottle would render as HTML."""

import json

from bottle import HTTPResponse

INTERNAL_ERROR = "internal error; see the daemon's log"


def json_response(status: int, body) -> HTTPResponse:
    return HTTPResponse(
        body=json.dumps(body),
        status=status,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def error_body(error) -> str:
    """Render Bottle's HTTPError as `{"message": ...}`; never leak a traceback."""
    message = error.body if isinstance(error.body, str) and error.body else error.status_line
    if error.status_code >= 500:
        message = INTERNAL_ERROR
    error.content_type = "application/json"
    return json.dumps({"message": message})
