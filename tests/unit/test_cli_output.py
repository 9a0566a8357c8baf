"""The shared output flags (-H -o -s -j -l) and the renderer."""

import io
import json

import click
import pytest
from click.testing import CliRunner
from tabulate import tabulate

from sdcadm.cli.output import OutputOptions, output_options, render, sort_rows

ROWS = [
    {"name": "beta", "uuid": "u-2", "size": 10, "ok": True, "note": None, "tags": ["a", "b"]},
    {"name": "alpha", "uuid": "u-1", "size": 300, "ok": False, "note": "x", "tags": []},
    {"name": "gamma", "uuid": "u-3", "size": 10, "ok": True, "note": "", "tags": ["c"]},
]


@click.command()
@output_options(["name", "size"], ["name", "uuid", "size", "ok", "note", "tags"],
                long_columns=["name", "uuid", "size", "ok"], headers={"uuid": "ID"},
                formats={"size": lambda v: f"{v}B"}, default_sort="name")
def listing(output):
    """List test rows."""
    render(ROWS, output)


def run(*args):
    return CliRunner().invoke(listing, list(args))


def test_default_table_is_sorted_with_upper_case_headers():
    result = run()
    assert result.exit_code == 0, result.output
    assert result.stdout == ("NAME    SIZE\n"
                             "alpha   300B\n"
                             "beta    10B\n"
                             "gamma   10B\n")


def test_no_header_is_tab_separated():
    assert run("-H").stdout == "alpha\t300B\nbeta\t10B\ngamma\t10B\n"


def test_output_fields_choose_subset_and_order_by_name_or_header():
    assert run("-H", "-o", "ID,name").stdout == "u-1\talpha\nu-2\tbeta\nu-3\tgamma\n"
    assert run("-H", "-o", "uuid").stdout == "u-1\nu-2\nu-3\n"


def test_cells_none_empty_bool_list():
    assert run("-H", "-o", "name,ok,note,tags").stdout == (
        "alpha\tfalse\tx\t-\nbeta\ttrue\t-\ta,b\ngamma\ttrue\t-\tc\n")


def test_sort_descending_and_multiple_keys():
    assert run("-H", "-o", "name", "-s", "-name").stdout == "gamma\nbeta\nalpha\n"
    # size ascending, then name descending among equal sizes
    assert run("-H", "-o", "name,size", "-s", "size,-name").stdout == (
        "gamma\t10B\nbeta\t10B\nalpha\t300B\n")
    assert run("-H", "-o", "name", "--sort=-size,name").stdout == "alpha\nbeta\ngamma\n"


def test_sort_on_raw_values_not_formatted_text():
    # "10B" < "300B" as text too, so use descending numbers to tell them apart
    assert run("-H", "-o", "size", "-s", "-size").stdout == "300B\n10B\n10B\n"


def test_long_adds_columns():
    # tabulate's plain layout: two spaces apart, each column two wider than its header
    assert run("-l").stdout == ("NAME    ID    SIZE    OK\n"
                                "alpha   u-1   300B    false\n"
                                "beta    u-2   10B     true\n"
                                "gamma   u-3   10B     true\n")


def test_json_has_all_fields_raw_and_parses():
    result = run("-j")
    data = json.loads(result.stdout)
    assert [r["name"] for r in data] == ["alpha", "beta", "gamma"]
    assert data[0] == {"name": "alpha", "uuid": "u-1", "size": 300, "ok": False, "note": "x",
                       "tags": []}


def test_json_with_output_fields_keeps_only_those():
    data = json.loads(run("-j", "-o", "uuid,size").stdout)
    assert data == [{"uuid": "u-1", "size": 300}, {"uuid": "u-2", "size": 10},
                    {"uuid": "u-3", "size": 10}]


@pytest.mark.parametrize("args, option", [(["-o", "name,bogus"], "-o"), (["-s", "-bogus"], "-s")])
def test_unknown_field_is_a_usage_error_listing_valid_fields(args, option):
    result = run(*args)
    assert result.exit_code == 2
    assert f"'{option}'" in result.stderr
    assert "unknown field 'bogus'" in result.stderr
    assert "valid fields: name, uuid, size, ok, note, tags" in result.stderr


def test_empty_field_list_is_a_usage_error():
    assert run("-o", ",").exit_code == 2


def test_help_documents_every_flag():
    out = run("--help").stdout
    for flag in ("-H", "-o, --output", "-s, --sort", "-j, --json", "-l, --long"):
        assert flag in out


def test_no_long_flag_without_long_columns():
    @click.command()
    @output_options(["a"])
    def short(output):
        """Short."""

    assert CliRunner().invoke(short, ["-l"]).exit_code == 2


def _render(rows, **kw):
    buf = io.StringIO()
    render(rows, OutputOptions(**kw), file=buf)
    return buf.getvalue()


def test_empty_rows():
    assert _render([], columns=["name"]) == "NAME\n"
    assert _render([], columns=["name"], no_header=True) == ""
    assert _render([], columns=["name"], json=True) == "[]\n"


@pytest.mark.parametrize("rows", [
    ROWS,
    [{"name": "a-very-long-name-indeed", "uuid": "", "size": 1, "ok": None, "note": "n",
      "tags": ["x"]}],
    [{"name": f"cn{i}", "uuid": f"{i:08d}", "size": i * 7, "ok": i % 2 == 0, "note": None,
      "tags": []} for i in range(50)],
])
def test_fast_table_layout_is_exactly_tabulate_plain(rows):
    columns = ["name", "uuid", "size", "ok", "note", "tags"]
    ours = _render(rows, columns=columns)
    from sdcadm.cli.output import cell
    expected = tabulate([[cell(r[c]) for c in columns] for r in rows],
                        headers=[c.upper() for c in columns], tablefmt="plain",
                        disable_numparse=True, stralign="left") + "\n"
    assert ours == expected


def test_non_ascii_and_multiline_cells_go_through_tabulate():
    rows = [{"name": "hé", "note": "two\nlines"}, {"name": "x", "note": "y"}]
    out = _render(rows, columns=["name", "note"])
    assert out.splitlines()[0].startswith("NAME")
    assert "two" in out and "lines" in out


def test_no_header_flattens_tabs_and_newlines_in_cells():
    rows = [{"a": "x\ty", "b": "one\ntwo"}]
    assert _render(rows, columns=["a", "b"], no_header=True) == "x y\tone two\n"


def test_sort_rows_none_last_and_mixed_types():
    rows = [{"k": None}, {"k": 2}, {"k": 1}]
    assert [r["k"] for r in sort_rows(rows, [("k", False)])] == [1, 2, None]
    mixed = [{"k": "b"}, {"k": 1}]
    assert [r["k"] for r in sort_rows(mixed, [("k", False)])] == [1, "b"]


def test_single_column_table_matches_tabulate():
    rows = [{"name": "x"}, {"name": "longer-name"}]
    expected = tabulate([["x"], ["longer-name"]], headers=["NAME"], tablefmt="plain",
                        disable_numparse=True, stralign="left") + "\n"
    assert _render(rows, columns=["name"]) == expected
