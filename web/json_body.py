"""A signed body parsed into what can be stored: a JSON object, nested at most MAX_DEPTH
deep, with finite numbers, integers that fit SQLite's 64 bits, and text made of Unicode
scalar values only.

Python's `json` accepts more than that, and each extra blows up later, after Envoy has
been told something: `NaN`, `Infinity` and `1e400` (a float that becomes inf) overflow
when used as a time; integers past 64 bits overflow SQLite; more than 4,300 digits raise
ValueError; deep nesting raises RecursionError in the parser and in anything that walks the
tree; and a lone surrogate (`"\\ud800"`, what a JavaScript client sends when it cuts an
emoji in half) cannot be encoded as UTF-8, so storing or logging it raises. All of these
are refused here with a 400 naming the problem, before anything is stored.
"""

import json
import math
import re
from itertools import accumulate

from daemon.rules.request import BadRequest, storable_text

MAX_DEPTH = 64
_INT_LIMIT = 2**63  # SQLite's INTEGER is signed 64-bit
_INT_DIGITS = len(str(_INT_LIMIT))  # checked before int() parses a long string

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_BRACKET = re.compile(r"[][{}]")
# UTF-8 cannot carry a surrogate (decoding refuses it), so only an escape can bring one in.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deep the JSON text nests, in linear time and without recursing.

    Escapes are removed first, so every remaining quote opens or closes a string; strings
    are removed next, so every remaining bracket is structure. Invalid JSON gets some
    number, and the parser refuses it anyway.
    """
    structure = _STRING.sub("", _ESCAPE.sub("", text))
    steps = map(_STEP.__getitem__, _BRACKET.findall(structure))
    return max(accumulate(steps), default=0)


def _refuse_constant(name: str):
    raise BadRequest(f"the body contains {name}, which is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the number {text[:40]} is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS or not -_INT_LIMIT <= int(text) < _INT_LIMIT:
        raise BadRequest(f"the integer {text[:40]}{'…' if len(text) > 40 else ''} is too large")
    return int(text)


def _where(parts: tuple) -> str:
    return f"`{'.'.join(str(part) for part in parts)}`" if parts else "the body"


def _check_text(body) -> None:
    """Refuse the first string or key with a lone surrogate, naming where it is."""
    stack = [(body, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if not storable_text(value):
                raise BadRequest(f"{_where(where)} is not valid Unicode text (a lone surrogate)")
        elif isinstance(value, dict):
            for key, inner in value.items():
                if not storable_text(key):
                    raise BadRequest(f"a key in {_where(where)} is not valid Unicode text")
                stack.append((inner, (*where, key)))
        elif isinstance(value, list):
            stack.extend((inner, (*where, index)) for index, inner in enumerate(value))


def parse_body(raw: bytes) -> dict:
    """The body as a dict that can be stored, or BadRequest (400) saying why not."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid JSON (not UTF-8)") from None
    # Fewer brackets than the limit cannot nest past it: the common body skips the count.
    openers = text.count("[") + text.count("{")
    if openers > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    try:
        body = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if _SURROGATE_ESCAPE.search(text):  # else no string can hold one: skip the walk
        _check_text(body)
    return body
