"""kernels/dispatch_table.json: the dispatch table is data, validated when read."""

from __future__ import annotations

import json
import os
import re

import pytest

import kernels
from kernels import dispatch


def _data(**over):
    d = {"schema": 1, "measured": False, "provenance": "test",
         "rows": [{"max_V": 65536, "variant": "row"}, {"max_V": None, "variant": "multi"}]}
    d.update(over)
    return d


def test_shipped_table():
    """The shipped file is what the module holds; unmeasured, it is the design default (multi,
    not split, above 65536); measured, its provenance names a result file in the repository."""
    t = dispatch.load_table()
    assert (t.rows, t.measured, t.provenance) == (dispatch.TABLE, dispatch.MEASURED,
                                                  dispatch.PROVENANCE)  # fmt: skip
    if not dispatch.MEASURED:
        assert dispatch.TABLE == ((65536, "row"), (None, "multi"))
        assert dispatch.PROVENANCE.startswith("unmeasured")
        assert [kernels.choose_variant(V) for V in (1, 65536, 65537, 151936, 10**7)] == [
            "row", "row", "multi", "multi", "multi"]  # fmt: skip
    else:
        m = re.match(r"measured: (\S+\.json) ", dispatch.PROVENANCE)
        assert m, dispatch.PROVENANCE
        results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "benchmarks", "results", m.group(1))  # fmt: skip
        assert os.path.isfile(results), f"commit the result file the table came from: {results}"


def test_table_json_round_trip(tmp_path):
    t = dispatch.DispatchTable(((1000, "split"), (50000, "row_rev"), (None, "multi")), True,
                               "measured: somewhere")  # fmt: skip
    p = tmp_path / "t.json"
    p.write_text(dispatch.table_json(t))
    assert dispatch.load_table(str(p)) == t
    assert [kernels.choose_variant(V, t.rows) for V in (1000, 1001, 50001)] == [
        "split", "row_rev", "multi"]  # fmt: skip


@pytest.mark.parametrize(
    "over,err,match",
    [
        ({"schema": 2}, ValueError, "expected schema 1, got 2"),
        ({"measured": "no"}, TypeError, "'measured' must be true or false"),
        ({"provenance": ""}, TypeError, "'provenance' must be a non-empty string"),
        ({"rows": []}, ValueError, "'rows' must be a non-empty list"),
        ({"rows": [{"max_V": None, "variant": "fast"}]}, ValueError, "unknown variant 'fast'"),
        ({"rows": [{"max_V": 10, "variant": "row"}]}, ValueError, "only the last row"),
        ({"rows": [{"max_V": None, "variant": "row"}, {"max_V": None, "variant": "row"}]},
         ValueError, "only the last row"),
        ({"rows": [{"max_V": 2.5, "variant": "row"}, {"max_V": None, "variant": "row"}]},
         TypeError, "positive integer or null, got 2.5"),
        ({"rows": [{"max_V": True, "variant": "row"}, {"max_V": None, "variant": "row"}]},
         TypeError, "positive integer"),
        ({"rows": [{"max_V": 9, "variant": "row"}, {"max_V": 9, "variant": "split"},
                   {"max_V": None, "variant": "row"}]}, ValueError, "must increase"),
        ({"rows": [{"max_V": None, "variant": "row", "x": 1}]}, ValueError, "exactly 'max_V'"),
    ],
)
def test_bad_tables_name_what_was_expected(over, err, match):
    with pytest.raises(err, match=match):
        dispatch.parse_table(_data(**over), "t.json")


def test_bad_files(tmp_path):
    p = tmp_path / "t.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dispatch.load_table(str(p))
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(TypeError, match="expected a JSON object, got list"):
        dispatch.load_table(str(p))
