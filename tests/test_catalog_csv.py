"""Parsing of catalog CSV files (encoder/catalog.py parse_csv)."""

import collections

import pytest

from encoder import catalog

HEADER = "id,colour,year\n"


def parse(text: str) -> tuple[dict, collections.Counter]:
    skipped: collections.Counter[str] = collections.Counter()
    rows = catalog.parse_csv(text.encode(), skipped)
    return rows, skipped


@pytest.mark.parametrize(
    ("name", "body", "ids", "skipped"),
    [
        ("plain", "1,red,2011\n2,blue,2012\n", ["1", "2"], {}),
        (
            "quote inside a field",
            '1,red,"20"11\n2,blue,2012\n',
            ["2"],
            {catalog.SKIP_MALFORMED_ROW: 1},
        ),
        (
            "unclosed quote does not swallow later rows",
            '1,"red,2011\n2,blue,2012\n3,green,2013\n',
            ["2", "3"],
            {catalog.SKIP_MALFORMED_ROW: 1},
        ),
        (
            "unclosed quote before a quoted field",
            '1,"red,2011\n2,"navy, dark",2012\n',
            ["2"],
            {catalog.SKIP_MALFORMED_ROW: 1},
        ),
        (
            "extra fields",
            "1,red,2011,x\n2,blue,2012\n",
            ["2"],
            {catalog.SKIP_FIELD_COUNT: 1},
        ),
        (
            "missing fields",
            "1,red\n2,blue,2012\n",
            ["2"],
            {catalog.SKIP_FIELD_COUNT: 1},
        ),
        (
            "empty id",
            ",red,2011\n  ,blue,2012\n3,green,2013\n",
            ["3"],
            {catalog.SKIP_MISSING_ID: 2},
        ),
        (
            "duplicate id",
            "1,red,2011\n1,blue,2012\n",
            ["1"],
            {catalog.SKIP_DUPLICATE_ROW: 1},
        ),
        ("blank lines", "\n1,red,2011\n\n2,blue,2012\n\n", ["1", "2"], {}),
        ("CRLF", "1,red,2011\r\n2,blue,2012\r\n", ["1", "2"], {}),
        (
            "quoted comma and newline",
            '1,"red, dark\nand shiny",2011\n2,blue,2012\n',
            ["1", "2"],
            {},
        ),
        ("no rows", "", [], {}),
    ],
)
def test_rows_kept_and_skipped(
    name: str, body: str, ids: list[str], skipped: dict[str, int]
) -> None:
    rows, counted = parse(HEADER + body)
    assert (sorted(rows), dict(counted)) == (ids, skipped)


def test_duplicate_id_keeps_the_first_row() -> None:
    rows, _ = parse(HEADER + "1,red,2011\n1,blue,2012\n")
    assert rows["1"]["colour"] == "red"


def test_quoted_comma_stays_in_the_value() -> None:
    rows, _ = parse('id,name\n1,"Nike, Air Max"\n')
    assert rows["1"] == {"name": "Nike, Air Max"}


@pytest.mark.parametrize(
    ("name", "column", "expected"),
    [
        ("integers", ["2011", "2012", "-3"], [2011, 2012, -3]),
        ("floats", ["1.5", "2", "1e3"], [1.5, 2.0, 1000.0]),
        ("mixed text", ["12", "M", "3.5"], ["12", "M", "3.5"]),
        ("leading zeros are codes", ["007", "12"], ["007", "12"]),
        ("not a number", ["nan", "inf", "1"], ["nan", "inf", "1"]),
        ("beyond int64", [str(2**70), "1"], [float(2**70), 1.0]),
        ("whitespace trimmed", [" red ", "blue"], ["red", "blue"]),
    ],
)
def test_values_are_typed_per_column(
    name: str, column: list[str], expected: list
) -> None:
    body = "".join(f"{i},{value}\n" for i, value in enumerate(column))
    rows, _ = parse("id,value\n" + body)
    values = [rows[str(i)]["value"] for i in range(len(column))]
    assert values == expected
    assert [type(v) for v in values] == [type(v) for v in expected]


@pytest.mark.parametrize("missing", ["", "NA"])
def test_missing_values_are_left_out(missing: str) -> None:
    rows, _ = parse(f"{HEADER}1,{missing},2011\n2,blue,{missing}\n")
    assert (rows["1"], rows["2"]) == ({"year": 2011}, {"colour": "blue"})


def test_missing_values_do_not_affect_column_type() -> None:
    rows, _ = parse(HEADER + "1,red,\n2,blue,NA\n3,green,2013\n")
    assert rows["3"]["year"] == 2013


def test_byte_order_mark_is_ignored() -> None:
    rows, _ = parse("\ufeff" + HEADER + "1,red,2011\n")
    assert rows == {"1": {"colour": "red", "year": 2011}}


def test_reserved_columns_are_dropped() -> None:
    rows, _ = parse("id,cluster,product_id,colour\n1,5,x,red\n")
    assert rows["1"] == {"colour": "red"}


def test_invalid_utf8_does_not_fail() -> None:
    skipped: collections.Counter[str] = collections.Counter()
    rows = catalog.parse_csv(b"id,name\n1,caf\xe9\n", skipped)
    assert rows["1"]["name"].startswith("caf")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("sku,colour\n1,red\n", "no 'id' column"),
        ("id,colour,colour\n1,red,blue\n", "repeats"),
    ],
)
def test_unusable_header_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)
