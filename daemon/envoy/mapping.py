"""The visitor-mapping field read in any shape Envoy may send, normalised to the pinned form
`{"<flow id>": ["<group id>", ...]}` (ENVOY_PROTOCOL.md §5: the stored shape of a mapping field
is not confirmed, so every plausible one is accepted).

Accepted: a dict `{flow: group | [groups] | "g1,g2"}`; a list of pairs `[[flow, group(s)], ...]`;
a list of objects `{"key", "value"}`, `{"left", "right"}` or `{"flow", "group(s)"}`; a JSON
string of any of these. Option objects `{"label", "value"}` stand for their value. Ids become
strings; groups are de-duplicated in order; rows of one flow are merged.
"""

import json
from typing import Any

from daemon.rules.request import BadRequest, as_id
from daemon.rules.settings import as_id_list

_PAIR_KEYS = (("key", "value"), ("left", "right"), ("flow", "group"), ("flow", "groups"))


def _flow_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("value", value.get("id"))
    return as_id(value)


def _groups(value: Any) -> list[str]:
    if isinstance(value, dict):  # one option object
        value = [value]
    return as_id_list(value)


def _row(item: Any, index: int) -> tuple[Any, Any]:
    if isinstance(item, list | tuple) and len(item) == 2:
        return item[0], item[1]
    if isinstance(item, dict):
        for left, right in _PAIR_KEYS:
            if left in item and right in item:
                return item[left], item[right]
    raise BadRequest(
        f"visitor_mapping: row {index + 1} is not a flow and its groups "
        '(expected [flow, group] or {"key": flow, "value": group})'
    )


def _rows(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError:
            raise BadRequest("visitor_mapping: expected a mapping of flows to groups") from None
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list | tuple):
        return [_row(item, index) for index, item in enumerate(value)]
    raise BadRequest("visitor_mapping: expected a mapping of flows to groups")


def normalise_mapping(value: Any) -> dict[str, list[str]]:
    """`{flow_id: [group_id, ...]}` from any accepted shape; BadRequest names what is wrong.

    A flow without a group is refused rather than dropped: the admin chose it and would
    otherwise believe it mapped.
    """
    mapping: dict[str, list[str]] = {}
    for left, right in _rows(value):
        flow = _flow_id(left)
        if flow is None:
            raise BadRequest("visitor_mapping: a row has no visitor flow")
        groups = _groups(right)
        if not groups:
            raise BadRequest(
                f"visitor flow {flow} has no Proxy group: choose one or remove the row"
            )
        merged = mapping.setdefault(flow, [])
        merged.extend(group for group in groups if group not in merged)
    return mapping
