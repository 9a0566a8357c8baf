"""JSON Schemas for every record and every file that crosses a process boundary.

``validate(kind, doc, source)`` checks ``doc`` against ``<kind>.json`` and
raises one ValidationError listing every problem found (not just the first).
"""

import json
from functools import lru_cache
from pathlib import Path

from sdcadm.errors import ValidationError


@lru_cache(maxsize=None)
def schema(kind):
    try:
        # Next to this file (importlib.resources would cost every command ~20 ms of import).
        text = (Path(__file__).parent / f"{kind}.json").read_text()
    except FileNotFoundError:
        raise KeyError(f"no schema named {kind!r}") from None
    return json.loads(text)


@lru_cache(maxsize=None)
def _validator(kind):
    import jsonschema  # slow to import; only the paths that validate pay for it

    return jsonschema.Draft202012Validator(schema(kind))


def problems(kind, doc):
    """Every schema violation of ``doc`` as 'at <path>: <message>' strings."""
    out = []
    for err in sorted(_validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"at {where}: {err.message}")
    return out


def validate(kind, doc, source="<input>"):
    found = problems(kind, doc)
    if found:
        raise ValidationError(kind, source, found)
    return doc
