"""The request bodies Label Studio's ML-backend client sends, checked field by field.

Label Studio (``label_studio/ml/api_connector.py``, 1.22/1.23) sends:

* ``POST /setup`` ``{project: "<id>.<created timestamp>", schema: <label config XML>, hostname: <its own
  URL>, access_token: <the project creator's token>, extra_params}`` and reads ``model_version``;
* ``POST /predict`` ``{tasks: [{id, data, ...}], project, label_config, params}`` and reads
  ``results``: one ``{result, score, model_version}`` per task, in task order;
* ``POST /webhook`` ``{action: "START_TRAINING", project: {id, ...}}`` when "Start training" is pressed,
  and every webhook event of the project (``ANNOTATION_CREATED``, ...), shaped the same way;
* ``POST /train`` ``{annotations, project, label_config, params}`` (older servers, instead of the
  START_TRAINING webhook), ``GET /health`` and ``GET /versions`` (reads ``versions``).

A bad body is a :class:`RequestError`: the app answers its status with ``{"error": message}``.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import FdposeError
from pipeline.io import parse_json


class RequestError(Exception):
    """A request the backend cannot serve: a 4xx HTTP status and a message naming the field or task
    and the reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(body: bytes) -> dict[str, Any]:
    """A JSON object, or :class:`RequestError`."""
    if not body:
        raise RequestError(400, "empty request body; expected a JSON object")
    try:
        data = parse_json(body, "request body")
    except FdposeError as error:
        raise RequestError(400, f"malformed JSON ({error})") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"expected a JSON object, got {type(data).__name__}")
    return data


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str = "request") -> Any:
    """``data[name]``, which must exist and be of ``kind``."""
    if name not in data or data[name] is None:
        raise RequestError(422, f"{where}: missing field '{name}'")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RequestError(422, f"{where}: field '{name}' must be {names}, got {type(value).__name__}")
    return value


def project_id(value: object, where: str = "request") -> int:
    """The numeric project id in Label Studio's ``"<id>.<timestamp>"`` project uid, an int, or a
    ``{id: ...}`` project object (webhooks)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isdigit():
            return int(head)
    raise RequestError(422, f"{where}: field 'project' must name a Label Studio project "
                            f"('<id>.<timestamp>', an id or {{'id': ...}}), got {value!r}")


def check_known(data: dict[str, Any], known: set[str], where: str) -> None:
    """Refuse fields this endpoint does not know (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise RequestError(422, f"{where}: unknown field(s) {unknown}; expected {sorted(known)}")
