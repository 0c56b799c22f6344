"""The packet's ratings.csv round-trips whatever the texts hold (issue 26, D2): random posts, replies and
rater comments with quotes, commas, newlines, semicolons, tabs, formula characters and non-BMP
characters are written by the packet's own writer, filled in as a spreadsheet saves them (comma,
semicolon or tab; minimal or full quoting; LF or CRLF line ends) and read back by the importer, which
must return every item with its levels and comment, in order, and the posts and replies as written."""

from __future__ import annotations

import csv
import io

import pandas as pd
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from audit.ratings.importing import read_rating_file
from audit.ratings.packet import write_ratings_csv

SPECIAL = ['"', '""', ",", ";", "\t", "\n", "\r\n", "\r", "=SUM(A1)", "+1", "-2", "@x", "'", "😀", "𝔘𝔫𝔦", "é", " "]
TEXT = st.lists(st.one_of(st.sampled_from(SPECIAL),
                          st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
                                  max_size=12)),
                max_size=12).map("".join)
ITEM = st.fixed_dictionaries({"post": TEXT, "reply": TEXT, "comment": TEXT,
                              "levels": st.tuples(*[st.sampled_from(["0", "1", "2", ""])] * 3),
                              "harmful": st.sampled_from(["", "yes", "no"])})


def _spreadsheet_csv(rows: list, delimiter: str, *, quote_all: bool, eol: str) -> str:
    """CSV as a spreadsheet saves it (RFC 4180): a cell with the delimiter, a quote, a CR or an LF is
    quoted, its quotes doubled. (Python's csv writer leaves a lone CR unquoted when the line end is LF,
    and then reads it back as a line end; no spreadsheet writes that.)"""
    def cell(v: str) -> str:
        v = str(v)
        if quote_all or any(c in v for c in (delimiter, '"', "\r", "\n")):
            return '"' + v.replace('"', '""') + '"'
        return v
    return "".join(delimiter.join(cell(v) for v in row) + eol for row in rows)


@seed(26)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(ITEM, min_size=1, max_size=6), delimiter=st.sampled_from([",", ";", "\t"]),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]), crlf=st.booleans())
def test_a_filled_packet_csv_round_trips_any_text(tmp_path, items, delimiter, quoting, crlf):
    ids = [f"it{i:016x}" for i in range(len(items))]
    path = write_ratings_csv(tmp_path / "ratings.csv",
                             [dict(item_id=i, post=it["post"], reply=it["reply"]) for i, it in zip(ids, items)])
    written = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
    # the packet's cells are the texts as csv_safe shows them; read back exactly, item by item
    from audit.untrusted import csv_safe
    shown = csv_safe(pd.DataFrame([{"post": it["post"], "reply": it["reply"]} for it in items]))
    assert [r["post"] for r in written] == list(shown["post"]) and [r["reply"] for r in written] == list(shown["reply"])
    # the rater fills it in; the spreadsheet saves it with its own delimiter, quoting and line ends
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for k, it in enumerate(items):
        df.loc[k, ["er", "ip", "ex"]] = list(it["levels"])
        df.loc[k, "harmful"] = it["harmful"]
        df.loc[k, "comment"] = it["comment"]
    filled = tmp_path / "filled.csv"
    filled.write_bytes(_spreadsheet_csv([list(df.columns), *df.itertuples(index=False, name=None)], delimiter,
                                        quote_all=quoting == csv.QUOTE_ALL, eol="\r\n" if crlf else "\n").encode())
    fmt, rows = read_rating_file(filled)
    assert fmt == "csv"
    assert [r.item_id for r in rows] == ids
    for r, it in zip(rows, items):
        want = {m: (float(v) if v else None) for m, v in zip(("ER", "IP", "EX"), it["levels"])}
        assert r.levels == want
        assert r.harmful == {"": None, "yes": 1, "no": 0}[it["harmful"]]
        assert r.comment == (it["comment"].strip() or None)
