"""The CSV table reader: the fast path reads exactly what Python's csv module reads, lines are counted as
an editor counts them, and every malformed body is a 4xx naming its line."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import PayloadTooLarge
from service.model.synthetic import make_synthetic_frame
from service.serving import csv_table
from service.serving.csv_table import BadCsvTable, MalformedCSV, Table, read_table


def read(text: str | bytes, max_rows: int = 100) -> Table:
    data = text.encode() if isinstance(text, str) else text
    return read_table(data, max_rows=max_rows, max_errors=10)


def rows_of(table: Table) -> list[list[str]]:
    columns = [table.cells(j) for j in range(len(table.header))]
    return [table.header, *(list(cells) for cells in zip(*columns, strict=True))]


def fast(text: str) -> Table | None:
    """The fast path's table, or None where it hands the body to the csv module."""
    data = text.encode()
    start = 1 if text.startswith(csv_table.BOM) else 0
    end = csv_table._end(text)
    codes = csv_table._codes(text, data, start, end)
    return csv_table._fast_table(text, codes, start, 10_000, lambda: None)


def reference(text: str) -> list[list[str]]:
    """What the documented reading is: the csv module (strict), BOM skipped, blank lines skipped."""
    text = text.removeprefix(csv_table.BOM)
    return [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]


# --- the fast path is the csv module's reading --------------------------------------------------------------
CELL_TEXT = st.text(alphabet=st.sampled_from(list('a1 ,"\n\r$.é-')), max_size=4)


@st.composite
def tables(draw: st.DrawFn) -> str:
    """Tables as writers write them (quoted as needed or always, LF or CRLF), sometimes broken by hand."""
    ncols = draw(st.integers(1, 4))
    nrows = draw(st.integers(1, 4))
    cells = draw(
        st.lists(st.lists(CELL_TEXT, min_size=ncols, max_size=ncols), min_size=nrows, max_size=nrows)
    )
    out = io.StringIO()
    quoting: Any = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    csv.writer(out, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(cells)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    if draw(st.integers(0, 4)) == 0:  # a character removed or added somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", '"', ",", "\n", "\r"])) + text[at + 1 :]
    return draw(st.sampled_from(["", csv_table.BOM])) + text


def check_against_reference(text: str) -> None:
    try:
        want: list[list[str]] | None = reference(text)
    except csv.Error:
        want = None
    blank = not text.removeprefix(csv_table.BOM).strip()
    if want is None or blank or len(want) < 2 or len({len(r) for r in want}) != 1:
        with pytest.raises((MalformedCSV, BadCsvTable)):
            read(text)
        return
    table = read(text)
    assert rows_of(table) == want
    module = csv_table._module_table(text.removeprefix(csv_table.BOM).rstrip("\r\n"), 100, 10)
    assert [table.line_of(i) for i in range(table.rows)] == [module.line_of(i) for i in range(module.rows)]


@settings(max_examples=3000, deadline=None)
@given(tables())
def test_written_tables_read_as_the_csv_module_reads_them(text: str) -> None:
    check_against_reference(text)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('a1,"\n\r é\x00')), max_size=30))
def test_any_text_reads_as_the_csv_module_reads_it(text: str) -> None:
    check_against_reference(text)


def test_files_pandas_writes_take_the_fast_path() -> None:
    frame = make_synthetic_frame(300, 3)
    for text in (frame.to_csv(index=False), frame.to_csv(index=False, lineterminator="\r\n")):
        table = fast(text)
        assert table is not None and table.rows == 300
        assert rows_of(table) == reference(text)
        assert '"' in text and "$" in "".join(table.cells(table.header.index("x12")))  # money is quoted


@pytest.mark.parametrize(
    "text",
    [
        'a,b\n"x ""quoted"" y",2\n',  # a doubled quote
        "a,b\n\n1,2\n",  # a blank line
        "a\n1\n",  # one column
        "a,b\r1,2\r",  # CR alone ends lines
    ],
)
def test_what_the_fast_path_leaves_to_the_csv_module(text: str) -> None:
    assert fast(text) is None
    assert rows_of(read(text)) == reference(text)


# --- lines, BOM, line ends ----------------------------------------------------------------------------------
def test_rows_are_numbered_by_the_line_they_start_on() -> None:
    text = 'a,b\n1,"two\nlines"\n3,4\n\n5,6\n'
    table = read(text)
    assert rows_of(table) == [["a", "b"], ["1", "two\nlines"], ["3", "4"], ["5", "6"]]
    assert [table.line_of(i) for i in range(3)] == [2, 4, 6]
    quoted_break = read('a,b\n1,"x\ny"\n3,4\n')  # the fast path, with a quoted line break
    assert [quoted_break.line_of(i) for i in range(2)] == [2, 4]


def test_header_after_blank_lines_is_counted_from_its_own_line() -> None:
    table = read("\n\na,b\n1,2\n")
    assert table.header == ["a", "b"] and table.header_line == 3 and table.line_of(0) == 4


@pytest.mark.parametrize("bom", ["\ufeff", ""])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_bom_is_skipped_and_crlf_is_a_line_end(bom: str, eol: str) -> None:
    for tail in ("é", "e"):  # text after the BOM ASCII or not
        text = bom + eol.join(["x5,x12", f'mond{tail}y,"$1,234.5"', "tuesday,"]) + eol
        table = read(text)
        assert rows_of(table) == [["x5", "x12"], [f"mond{tail}y", "$1,234.5"], ["tuesday", ""]]
        assert fast(text) is not None


# --- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "line", "says"),
    [
        (b"a,b\n1,2\n3,\xff\n", 3, "not UTF-8"),
        (b'a,b\n1,"2\n', None, "not valid CSV"),  # a quote left open
        (b'a,b\n1,"2"x\n', 2, "not valid CSV"),  # text after a closing quote
    ],
)
def test_malformed_bodies_name_their_line(data: bytes, line: int | None, says: str) -> None:
    with pytest.raises(MalformedCSV) as caught:
        read(data)
    assert says in caught.value.detail
    if line is not None:
        assert caught.value.errors[0].as_dict()["line"] == line
        assert f"line {line}" in caught.value.detail


@pytest.mark.parametrize("data", [b"", b"  \n\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"])
def test_an_empty_body_is_a_400(data: bytes) -> None:
    with pytest.raises(MalformedCSV, match="empty"):
        read(data)


def test_utf16_is_a_400_that_says_so() -> None:
    with pytest.raises(MalformedCSV, match="UTF-16"):
        read("a,b\n1,2\n".encode("utf-16"))


def test_a_header_alone_is_a_422() -> None:
    with pytest.raises(BadCsvTable, match="no rows") as caught:
        read("x5,x12\n")
    assert caught.value.errors[0].as_dict()["line"] == 1


def test_ragged_rows_are_named_by_line() -> None:
    with pytest.raises(BadCsvTable) as caught:
        read("a,b,c\n1,2,3\n1,2\n1,2,3,4\n1,2,3\n")
    error = caught.value
    assert [(e.as_dict()["line"], e.row) for e in error.errors] == [(3, 1), (4, 2)]
    assert "2 cell(s) where the header (line 1) has 3" in error.errors[0].reason
    assert "first: line 3" in error.detail and error.extra["error_count"] == 2


@pytest.mark.parametrize("ragged", [False, True])
def test_too_many_rows_is_a_413(ragged: bool) -> None:
    text = "a,b\n" + "1,2\n" * 11 + ("1\n" if ragged else "")
    with pytest.raises(PayloadTooLarge) as caught:
        read(text, max_rows=10)
    assert caught.value.extra["max_rows"] == 10
    assert read("a,b\n" + "1,2\n" * 10, max_rows=10).rows == 10
