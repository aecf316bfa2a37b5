"""The file scorer's Arrow reading of CSV chunks is the door's reading: the same cells on the same lines, or
no reading at all (the door's path then reads the chunk), and the same values and problems per column as
service/model/parsing.py, bit for bit."""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.files import chunks as chunks_module
from service.files.arrow_columns import parse_categories, parse_numbers, string_array
from service.files.arrow_csv import header_names, read_arrow_chunk
from service.files.chunks import ChunkScorer, read_csv_chunk
from service.files.formats import Format, kind_of
from service.files.sources import TextChunk, text_chunks
from service.model.parsing import category_lookup, parse_category_column, parse_numeric_column
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel

FORMATS = ("number", "money", "percent")
ALPHABET = [
    *"0123456789.eE+-$,()% \t_naNif\x00\x1c",
    *("\u0661", "\uff11", "\xa0", "1_0", "Inf", "nan", "None", "NULL", "($1.5)", "7%", "1e999", "-1e400"),
]


def bits(values: np.ndarray) -> list[int]:
    out: list[int] = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).tolist()
    return out


def same_parse(column: list[str], fmt: str) -> None:
    got, got_problems = parse_numbers(string_array(column), fmt)
    want, want_problems = parse_numeric_column(column, fmt)
    assert bits(got) == bits(want), (column, fmt)
    assert got_problems.items == want_problems.items


# --- numbers ----------------------------------------------------------------------------------------------
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(ALPHABET), max_size=6).map("".join), min_size=1, max_size=8))
def test_numbers_parse_as_the_column_parser_parses_them(column: list[str]) -> None:
    for fmt in FORMATS:
        same_parse(column, fmt)


def hard_numbers(rng: random.Random) -> list[str]:
    """Decimal strings where rounding is hard: long mantissas, ties, subnormals, the edges of the range."""
    out = []
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
        point = rng.randint(0, len(digits))
        exponent = rng.choice(["", f"e{rng.randint(-330, 310)}", f"E+{rng.randint(0, 30)}"])
        out.append(rng.choice(["", "-", "+"]) + digits[:point] + "." + digits[point:] + exponent)
    for value in (5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3, 9007199254740993.0):
        out += [repr(value), f"{value:.25e}", f"{value:.17g}"]
    # exact halfway points between two doubles (ties to even)
    out += ["9007199254740993", "9007199254740995", "2.4703282292062327e-324", "2.4703282292062328e-324"]
    return out


def test_hard_numbers_have_float_s_bits() -> None:
    column = hard_numbers(random.Random(7))
    got, problems = parse_numbers(string_array(column), "number")
    want = [float(v) for v in column]
    finite = [i for i, v in enumerate(want) if not math.isinf(v)]
    assert bits(got[finite]) == bits(np.array([want[i] for i in finite]))
    assert [i for i, _, _ in problems.items] == [i for i, v in enumerate(want) if math.isinf(v)]
    same_parse(column, "number")


@pytest.mark.parametrize(
    ("fmt", "column"),
    [
        (
            "money",
            ["$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$-4446.82", "12", "nan", "", "x"],
        ),
        ("money", ["(5", "5)", "((5))", "( $5 )", "$ 5", "5$,$", "()", "(", "$", ",", "1e3", "-(5)"]),
        ("percent", ["62.59%", "3.11%", "-1.5%", "62.59", "nan", "", "5%%", "% 5", " 7% ", "5 %", "%"]),
        (
            "number",
            ["-1.018506", "1e-05", "-4e2", ".5", "5.", "+5", " 5", "5 ", "1_0", "nan", "NaN ", "-nan"],
        ),
        ("number", ["inf", "Infinity", "1e400", "-1e400", "0x10", "\uff11", "1\x002", "", "None", "none "]),
    ],
)
def test_documented_and_refused_spellings(fmt: str, column: list[str]) -> None:
    same_parse(column, fmt)


def test_a_clean_column_is_cast_at_once_and_a_bad_value_is_named() -> None:
    values, problems = parse_numbers(string_array(["1.5", "", "2e3", "abc", "NULL"]), "number")
    assert values[0] == 1.5 and values[2] == 2000.0
    assert np.isnan(values[[1, 3, 4]]).all()
    assert problems.items == [(3, "not a number", "abc")]


# --- categories -------------------------------------------------------------------------------------------
LEVELS = ["monday", "tuesday", "Straße", "asia"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["monday", " Monday ", "TUESDAY", "", "nan", "NULL", "x", "straße", "x" * 60]),
        max_size=10,
    )
)
def test_categories_parse_as_the_column_parser_parses_them(column: list[str]) -> None:
    lookup = category_lookup(LEVELS)
    codes, problems, unseen = parse_categories(string_array(column), lookup)
    want_codes, want_problems, want_unseen = parse_category_column(column, lookup)
    assert codes.tolist() == want_codes.tolist() and codes.dtype == want_codes.dtype
    assert (problems.items, unseen) == (want_problems.items, want_unseen)


# --- chunks -----------------------------------------------------------------------------------------------
CELL = st.text(alphabet=st.sampled_from(list('a1 ,"\n\r$.é-')), max_size=4)


@st.composite
def csv_texts(draw: st.DrawFn) -> bytes:
    """Header and rows as writers write them, sometimes broken by hand (a character added or removed)."""
    ncols = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(CELL, min_size=ncols, max_size=ncols), min_size=1, max_size=5))
    out = io.StringIO()
    quoting: Any = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(out, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow([f"c{j}" for j in range(ncols)])
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(len("c0") + 1, len(text)))
        text = text[:at] + draw(st.sampled_from(["", '"', ",", "\n", "\r", "\n\n"])) + text[at + 1 :]
    data = text.encode()
    if draw(st.integers(0, 8)) == 0:
        data += b"\xff,x\n"
    return data


def chunk_of(data: bytes) -> TextChunk:
    header, _, body = data.partition(b"\n")
    header += b"\n"
    return TextChunk(Format.CSV, header, body, 2)


def check_chunk(data: bytes) -> None:
    chunk = chunk_of(data)
    names = header_names(chunk.header)
    fast = read_arrow_chunk(chunk, set(names or []))
    if fast is None:
        return
    door = read_csv_chunk(chunk)
    assert door.rejects == [] and door.records == fast.rows
    assert [door.line_of(i) for i in range(door.records)] == [2 + i for i in range(fast.rows)]
    assert fast.header == door.rows.header
    for j in range(len(fast.header)):
        assert fast.cells(j) == door.rows.cells(j), (data, j)


@settings(max_examples=3000, deadline=None)
@given(csv_texts())
def test_a_chunk_read_by_arrow_has_the_door_s_cells_and_lines(data: bytes) -> None:
    check_chunk(data)


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('a1,"\n\r é\x00')), max_size=30))
def test_any_text_read_by_arrow_has_the_door_s_cells(text: str) -> None:
    check_chunk(("c0,c1\n" + text).encode())


@pytest.mark.parametrize(
    "data",
    [
        b'c0,c1\n"x ""quoted"" y",2\n',  # a doubled quote
        b"c0,c1\n1,2\n\n3,4\n",  # a blank line
        b"c0,c1\n1,2\n3,4\n\n",  # blank lines at the end
        b'c0,c1\n"a\nb",2\n',  # a quoted line break
        b"c0,c1\n1,2\r3,4\n",  # CR alone
        b"c0,c1\n1,2,3\n4,5\n",  # a ragged row
        b"c0,c1\n1,\xff\n",  # not UTF-8
        b'c0,c1\n1,a"b\n',  # a quote inside a cell
        b'"c0",c1\n1,2\n',  # a quoted header
        b"c0\n1\n",  # one column
        b"c0,c1\n",  # no rows
    ],
)
def test_what_arrow_leaves_to_the_door(data: bytes) -> None:
    assert read_arrow_chunk(chunk_of(data), {"c0", "c1"}) is None


def test_bom_and_crlf_are_read() -> None:
    chunk = chunk_of(b'\xef\xbb\xbfc0,c1\r\n"1,5",2\r\n3,"x"\r\n')
    fast = read_arrow_chunk(chunk, {"c0", "c1"})
    assert fast is not None and fast.header == ["c0", "c1"]
    assert (fast.cells(0), fast.cells(1)) == (["1,5", "3"], ["2", "x"])


# --- whole chunks scored ----------------------------------------------------------------------------------
def bad_rows_csv() -> bytes:
    """Synthetic rows (pandas' writing) with a bad value of every kind the scorer names, in a table of the
    right shape (so the Arrow reading takes it)."""
    frame = make_synthetic_frame(400, 5).astype(str)
    frame.loc[3, "x44"] = "abc"
    frame.loc[5, "x12"] = "(5"
    frame.loc[7, "x91"] = "1e999"
    frame.loc[9, "x5"] = "someday"
    frame.loc[11, "x53"] = "1e308"  # out of the range the model can score, once scaled
    frame.loc[13, "x31"] = "nan"
    frame.loc[15, "x12"] = " NULL "
    frame.loc[17, "x58"] = "\uff11"
    frame.loc[19, "x62"] = "1_0"
    frame["customer_id"] = [f"c-{i}" if i % 3 else "" for i in range(len(frame))]
    text: str = frame.to_csv(index=False)
    return text.encode()


@pytest.mark.parametrize("reject_unseen", [False, True])
def test_a_chunk_scores_the_same_by_arrow_and_by_the_door(
    approved_compiled: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reject_unseen: bool
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(bad_rows_csv())
    chunks = list(text_chunks(path, kind_of(path), 64 * 1024))
    scorer = ChunkScorer(
        approved_compiled, kind_of(tmp_path / "out.csv"), reasons=2, reject_unseen=reject_unseen
    )
    assert all(read_arrow_chunk(c, scorer.wanted) is not None for c in chunks)
    fast = [scorer(c) for c in chunks]
    monkeypatch.setattr(chunks_module, "read_arrow_chunk", lambda chunk, wanted: None)
    door = [scorer(c) for c in chunks]
    for a, b in zip(fast, door, strict=True):
        assert (a.payload, a.rejects, a.records, a.scored, a.notes, a.unseen) == (
            b.payload,
            b.rejects,
            b.records,
            b.scored,
            b.notes,
            b.unseen,
        )
    rejects = [(r.line, r.field) for result in fast for r in result.rejects]
    assert (5, "x44") in rejects and (7, "x12") in rejects and (9, "x91") in rejects
    assert ((11, "x5") in rejects) is reject_unseen
    assert (13, "x53") in rejects and (19, "x58") in rejects and (21, "x62") in rejects
    assert sum(r.scored for r in fast) == 400 - len({line for line, _ in rejects})
