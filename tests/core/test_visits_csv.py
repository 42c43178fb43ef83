"""The one visits-CSV reader (longnet/io/visits.py): every command reads a visits file by the same rules."""
from __future__ import annotations

import math

import pytest

from longnet.errors import LongnetError
from longnet.io.visits import cell_value, read_visit_rows, read_visits_csv, visit_days


def test_cells_and_missing_values(tmp_path):
    f = tmp_path / "visits.csv"
    f.write_text("\ufeffcase, days ,score,site\n a ,0,1.5,x\nb,30,nan,\nc,,NA,y\n", encoding="utf-8")
    table = read_visits_csv(f)
    assert table == {"a": {"days": 0.0, "score": 1.5, "site": "x"}, "b": {"days": 30.0, "score": None, "site": None},
                     "c": {"days": None, "score": None, "site": "y"}}
    assert visit_days(f) == {"a": 0.0, "b": 30.0}
    assert cell_value("inf") is None and cell_value(" 2 ") == 2.0 and cell_value("n/a") is None
    assert not math.isnan(cell_value("1e3"))
    assert read_visits_csv(None) == {} and visit_days(None) == {}


@pytest.mark.parametrize("text, message", [
    ("case,days\na,soon\n", "'days' of case 'a' is not a finite number"),
    ("id,days\na,1\n", "needs a header with a 'case' column"),
    ("case,days,days\na,1,2\n", "column 'days' appears twice"),
])
def test_bad_visits_files_name_the_problem(tmp_path, text, message):
    f = tmp_path / "visits.csv"
    f.write_text(text)
    with pytest.raises(LongnetError, match=message) as e:
        read_visits_csv(f)
    assert e.value.path == f or str(f) in str(e.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(LongnetError, match="cannot read visits CSV"):
        read_visit_rows(tmp_path / "missing.csv")
