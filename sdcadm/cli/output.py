"""The output flags of every listing, and the one renderer.

``@output_options(default_columns, all_columns)`` adds ``-H``, ``-o``, ``-s``,
``-j`` (and ``-l`` when ``long_columns`` is given) and passes the command one
``output`` argument, an ``OutputOptions``. ``render(rows, output)`` writes the
rows (a list of dicts, one key per field) to stdout:

* a table: upper-case headers, columns left-aligned and two spaces apart
  (tabulate's ``plain`` format); ``None`` and ``""`` show as ``-``;
* ``-H``: no header, one tab between fields (for ``cut``/``awk``);
* ``-j``: a JSON array of objects with every field (only the ``-o`` fields
  when ``-o`` is given), one object per line, raw values.

A field is named by its key (``admin_ip``) or its header (``ADMIN-IP``),
case-insensitively, with ``-`` and ``_`` interchangeable.

Speed matters (``server ls`` on 10,000 servers): cells are formatted column by
column, and a table whose cells are all single-line ASCII is laid out here in
exactly tabulate's ``plain`` layout (tabulate needs ~1.3 s for 50,000 rows);
anything else (wide or multi-line text) goes through tabulate itself.
"""

import functools
import json
import sys
import time
from dataclasses import dataclass, field
from itertools import repeat

import click

# tabulate's ``plain`` format: two spaces between columns, and with headers
# every column at least two wider than its header (tabulate's MIN_PADDING).
_SEP = "  "
_MIN_PADDING = 2


@dataclass
class OutputOptions:
    columns: list                      # the fields to show, in order
    sort: list = field(default_factory=list)   # [(field, descending)]
    no_header: bool = False
    json: bool = False
    long: bool = False
    explicit_columns: bool = False     # -o was given
    headers: dict = field(default_factory=dict)  # field -> HEADER
    formats: dict = field(default_factory=dict)  # field -> value -> text (table and -H)

    def header(self, name):
        return _header(name, self.headers)


def _norm(name):
    return name.strip().lower().replace("-", "_")


def _field_table(fields, headers):
    """Normalized name or header -> field."""
    table = {}
    for name in fields:
        table[_norm(name)] = name
    for name in fields:
        header = headers.get(name)
        if header:
            table.setdefault(_norm(header), name)
    return table


def _parse_fields(value, table, fields, option):
    names = []
    for part in value.split(","):
        if not part.strip():
            continue
        descending = option == "-s" and part.strip().startswith("-")
        raw = part.strip()[1:] if descending else part.strip()
        name = table.get(_norm(raw))
        if name is None:
            raise click.BadParameter(
                f"unknown field {raw!r}; valid fields: {', '.join(fields)}", param_hint=f"'{option}'")
        names.append((name, descending) if option == "-s" else name)
    if not names:
        raise click.BadParameter("expected a comma-separated list of fields", param_hint=f"'{option}'")
    return names


def output_options(default_columns, all_columns=None, *, long_columns=None, headers=None,
                   formats=None, default_sort=None):
    """Decorator adding the output flags; the command gets ``output: OutputOptions``.

    ``default_columns``: fields shown by default. ``all_columns``: every field
    ``-o``/``-s`` accept (default: the default and long columns). ``long_columns``:
    shown with ``-l`` (no ``-l`` flag without them). ``headers``: field -> header
    where the upper-cased field name is not right (``{"uuid": "INSTANCE"}``).
    ``formats``: field -> function making a value readable in tables and ``-H``.
    ``default_sort``: sort spec used without ``-s`` (e.g. ``"hostname"``).
    """
    default_columns = list(default_columns)
    long_columns = list(long_columns) if long_columns else None
    fields = list(dict.fromkeys(all_columns or (default_columns + (long_columns or []))))
    missing = [c for c in default_columns + (long_columns or []) if c not in fields]
    if missing:
        raise ValueError(f"columns {missing} are not in all_columns")
    headers = dict(headers or {})
    formats = dict(formats or {})
    table = _field_table(fields, headers)
    sort_default = _parse_fields(default_sort, table, fields, "-s") if default_sort else []
    listing = ", ".join(fields)

    def decorator(f):
        @functools.wraps(f)
        def wrapper(*args, out_no_header, out_columns, out_sort, out_json, out_long=False, **kwargs):
            columns = out_columns or (long_columns if out_long and long_columns else default_columns)
            kwargs["output"] = OutputOptions(
                columns=list(columns), sort=out_sort or sort_default, no_header=out_no_header,
                json=out_json, long=out_long, explicit_columns=bool(out_columns),
                headers=headers, formats=formats)
            return f(*args, **kwargs)

        options = [
            click.option("-H", "out_no_header", is_flag=True,
                         help="No header; fields separated by one tab (for scripts)."),
            click.option("-o", "--output", "out_columns", metavar="FIELD,...",
                         callback=lambda ctx, p, v: _parse_fields(v, table, fields, "-o") if v else None,
                         help=f"Fields to show, in order. Fields: {listing}."),
            click.option("-s", "--sort", "out_sort", metavar="FIELD,...",
                         callback=lambda ctx, p, v: _parse_fields(v, table, fields, "-s") if v else None,
                         help="Sort by these fields; prefix a field with '-' for descending order"
                              + (f" (default: {default_sort})." if default_sort else ".")),
            click.option("-j", "--json", "out_json", is_flag=True,
                         help="JSON array of objects with every field (only the -o fields if given)."),
        ]
        if long_columns:
            options.append(click.option(
                "-l", "--long", "out_long", is_flag=True,
                help=f"More columns: {', '.join(_header(c, headers) for c in long_columns)}."))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorator


def _header(name, headers):
    return headers.get(name) or name.upper().replace("_", "-")


# -- rendering -----------------------------------------------------------------

def render(rows, output, file=None):
    """Write ``rows`` (a list of dicts) to stdout as ``output`` asks."""
    names = list(dict.fromkeys(k for r in rows for k in r)) if output.json else (
        list(dict.fromkeys(output.columns + [n for n, _ in output.sort])))
    columns = {name: list(map(dict.get, rows, repeat(name))) for name in names}
    render_columns(columns, output, file, count=len(rows))


def listed_fields(output, json_fields):
    """The fields ``output`` shows, sorts on or (``-j``: ``json_fields``) prints."""
    if output.json and not output.explicit_columns:
        return list(json_fields)
    return list(dict.fromkeys(output.columns + [name for name, _ in output.sort]))


def render_columns(columns, output, file=None, count=None):
    """Write a listing held by column, ``{field: [value, ...]}`` (lists of one
    length, holding at least the fields shown and sorted on), as ``output``
    asks. For big listings: no dict per row (``insts``: 50,000 rows)."""
    out = file or sys.stdout
    if count is None:
        count = len(next(iter(columns.values()), ()))
    if output.sort and count > 1:
        order = sort_order(columns, count, output.sort)
        columns = {name: list(map(values.__getitem__, order)) for name, values in columns.items()}
    if output.json:
        _write_json(out, output.columns if output.explicit_columns else list(columns), columns,
                    count)
        return
    cells = [_cells(columns[name], output.formats.get(name)) for name in output.columns]
    if output.no_header:
        out.writelines(_tab_separated(cells, count))
    else:
        out.writelines(_table([output.header(c) for c in output.columns], cells, count))


def sort_order(columns, count, sort):
    """Row indices ordered by [(field, descending)], first key first; stable;
    None last (first when descending); mixed types compared as text."""
    order = list(range(count))
    for name, descending in reversed(sort):
        values = columns[name]
        try:
            order = sorted(order, key=lambda i: (values[i] is None, values[i]),
                           reverse=descending)
        except TypeError:  # mixed types in one field: compare as text
            order = sorted(order, key=lambda i: (values[i] is None, str(values[i])),
                           reverse=descending)
    return order


def sort_rows(rows, sort):
    """Rows (dicts) sorted as ``sort_order`` sorts columns."""
    if not sort:
        return rows
    columns = {name: list(map(dict.get, rows, repeat(name))) for name, _ in sort}
    return [rows[i] for i in sort_order(columns, len(rows), sort)]


def _write_json(out, names, columns, count, chunk=2048):
    """A JSON array, one object per line, written a chunk of rows at a time."""
    if not count:
        out.write("[]\n")
        return
    dumps = json.JSONEncoder(default=str).encode
    values = [columns.get(name) or [None] * count for name in names]
    out.write("[\n")
    for start in range(0, count, chunk):
        rows = (dict(zip(names, row)) for row in zip(*(v[start:start + chunk] for v in values)))
        out.write((",\n" if start else "") + ",\n".join(map(dumps, rows)))
    out.write("\n]\n")


def cell(value):
    """A value as table text: None/"" -> "-", bools as true/false, lists comma-joined."""
    if value is None or value == "":
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _cells(values, fmt):
    """One column's values as table text."""
    if fmt is not None:
        return [cell(fmt(v)) for v in values]
    # Whole-column fast paths: no Python call per cell for plain text or integers.
    kinds = set(map(type, values))
    if kinds == {str}:
        return [v or "-" for v in values] if "" in values else values
    if kinds == {int}:
        return list(map(str, values))
    return [v if v.__class__ is str and v else cell(v) for v in values]


# Lines formatted and written per chunk: 50,000 lines are never held twice
# (as lines and as their join), which halves the peak memory of `insts`.
_CHUNK = 4096


def _tab_separated(columns, count):
    """The lines of ``-H``: one tab between fields, tabs and newlines in cells flattened."""
    for i, col in enumerate(columns):
        joined = "\x00".join(col)
        if "\t" in joined or "\n" in joined:
            columns[i] = [c.replace("\t", " ").replace("\n", " ") for c in col]
    for start in range(0, count, _CHUNK):
        chunk = zip(*(col[start:start + _CHUNK] for col in columns))
        yield "\n".join(map("\t".join, chunk)) + "\n"


def _plain(cells):
    """True when every cell is single-line ASCII (laid out here, not by tabulate)."""
    text = "\x00".join(cells)
    return text.isascii() and "\n" not in text and "\r" not in text and "\t" not in text


def _table(headers, columns, count):
    """The lines of a table, in tabulate's ``plain`` layout."""
    if not all(map(_plain, columns + [headers])):
        yield _tabulate(headers, columns)
        return
    widths = [max(len(h) + _MIN_PADDING, max(map(len, col), default=0))
              for h, col in zip(headers, columns)]
    # The last column unpadded: tabulate strips trailing blanks from every line.
    fmt = _SEP.join([f"%-{w}s" for w in widths[:-1]] + ["%s"])
    yield fmt % tuple(headers) + "\n"
    for start in range(0, count, _CHUNK):
        chunk = zip(*(col[start:start + _CHUNK] for col in columns))
        yield "\n".join(map(fmt.__mod__, chunk)) + "\n"


def _tabulate(headers, columns):
    from tabulate import tabulate

    rows = list(zip(*columns))
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True,
                    stralign="left") + "\n"


# -- cell formats shared by several commands ---------------------------------------------

def format_time(ts):
    """A unix time as UTC ISO 8601 (``2023-11-14T22:13:20Z``); None for no time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def format_bytes(n):
    """1536 -> '1.5K', 0 -> '0'; powers of 1024 like ls -h."""
    if n is None:
        return None
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return None
