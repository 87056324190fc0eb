"""Parameters: ``cfg/params.yaml`` read by section, the defaults every stage command starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import FdposeError

DEFAULT_PARAMS = Path("cfg/params.yaml")


def load_params(section: str | None = None, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The mapping under ``section`` of the params file (the whole file when ``section`` is None).

    A missing file gives an empty mapping (the commands then use their built-in defaults); a file that
    is not valid YAML is an error naming it.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise FdposeError(f"invalid YAML ({error})", path=path) from None
    if not isinstance(params, dict):
        raise FdposeError("expected a mapping of sections", path=path)
    if section is None:
        return params
    value = params.get(section) or {}
    if not isinstance(value, dict):
        raise FdposeError(f"section '{section}' is not a mapping", path=path)
    return value
