"""Request validation: proto filters and paging into domain values."""

import math

import pytest

from indexer.filters import Filter, Match, Range
from proto.lookalike.v1 import lookalike_pb2 as pb
from server import validation
from server.config import ServerConfig

SCHEMA = validation.FieldSchema.from_metadata(
    {"keyword_fields": ["articleType", "gender"], "numeric_fields": ["year"]}
)
CONFIG = ServerConfig(max_top_k=100, max_offset=1000)


def _any_of(field: str, *values: pb.Value) -> pb.Condition:
    return pb.Condition(field=field, any_of=pb.ValueList(values=values))


def _range(field: str, **bounds: float) -> pb.Condition:
    return pb.Condition(field=field, range=pb.Range(**bounds))


def _text(value: str) -> pb.Value:
    return pb.Value(string_value=value)


def _int(value: int) -> pb.Value:
    return pb.Value(int_value=value)


def _double(value: float) -> pb.Value:
    return pb.Value(double_value=value)


@pytest.mark.parametrize(
    "message, expected",
    [
        (pb.Filter(), None),
        (
            pb.Filter(must=[_any_of("articleType", _text("Shirts"))]),
            Filter(must=(Match("articleType", ("Shirts",)),)),
        ),
        (
            pb.Filter(must=[_any_of("gender", _text("Men"), _text("Boys"))]),
            Filter(must=(Match("gender", ("Men", "Boys")),)),
        ),
        # An integer on a keyword field means its decimal spelling.
        (
            pb.Filter(must=[_any_of("articleType", _int(42))]),
            Filter(must=(Match("articleType", ("42",)),)),
        ),
        (
            pb.Filter(must=[_any_of("cluster", _int(2))]),
            Filter(must=(Match("cluster", (2,)),)),
        ),
        # An integral double on a numeric field becomes an integer.
        (
            pb.Filter(must=[_any_of("year", _double(2011.0))]),
            Filter(must=(Match("year", (2011,)),)),
        ),
        (
            pb.Filter(must=[_range("year", gte=2011, lt=2015)]),
            Filter(must=(Range("year", gte=2011, lt=2015),)),
        ),
        (
            pb.Filter(must=[_range("cluster", lte=3)]),
            Filter(must=(Range("cluster", lte=3),)),
        ),
        (
            pb.Filter(must_not=[_any_of("gender", _text("Men"))]),
            Filter(must_not=(Match("gender", ("Men",)),)),
        ),
        # Equal bounds, both inclusive: exactly one value matches.
        (
            pb.Filter(must=[_range("year", gte=2012, lte=2012)]),
            Filter(must=(Range("year", gte=2012, lte=2012),)),
        ),
    ],
)
def test_parse_filter_converts_valid_filters(message, expected):
    assert validation.parse_filter(message, SCHEMA) == expected


@pytest.mark.parametrize(
    "condition, words",
    [
        (_any_of("colour", _text("Blue")), ["'colour'", "allowed", "year"]),
        (pb.Condition(field="", any_of=pb.ValueList()), ["no field"]),
        (_any_of("gender"), ["'gender'", "empty"]),
        (pb.Condition(field="gender"), ["'gender'", "any_of or range"]),
        (_range("gender", gte=1), ["'gender'", "numeric fields"]),
        (_range("year"), ["'year'", "no bound"]),
        (_range("year", gte=2015, lte=2011), ["'year'", "above"]),
        (_range("year", gt=2015, lt=2011), ["'year'", "above"]),
        (_range("year", gte=math.nan), ["'year'", "finite"]),
        (_range("year", lt=math.inf), ["'year'", "finite"]),
        (_any_of("gender", pb.Value(bool_value=True)), ["'gender'", "text"]),
        (_any_of("gender", _double(2.5)), ["'gender'", "string"]),
        (_any_of("year", _text("2011")), ["'year'", "numeric"]),
        (_any_of("year", _double(math.nan)), ["'year'", "finite numbers"]),
        (_any_of("year", pb.Value()), ["'year'", "empty values"]),
    ],
)
def test_parse_filter_refuses_with_a_message_naming_the_field(condition, words):
    with pytest.raises(validation.RequestError) as error:
        validation.parse_filter(pb.Filter(must=[condition]), SCHEMA)
    for word in words:
        assert word in str(error.value)


def test_parse_filter_refuses_too_many_conditions():
    condition = _any_of("gender", _text("Men"))
    message = pb.Filter(must=[condition] * (validation.MAX_CONDITIONS + 1))
    with pytest.raises(validation.RequestError, match="at most"):
        validation.parse_filter(message, SCHEMA)


def test_parse_filter_refuses_too_many_values():
    values = [
        _text(str(i)) for i in range(validation.MAX_VALUES_PER_CONDITION + 1)
    ]
    message = pb.Filter(must=[_any_of("gender", *values)])
    with pytest.raises(validation.RequestError, match="at most"):
        validation.parse_filter(message, SCHEMA)


def test_schema_treats_cluster_as_numeric():
    schema = validation.FieldSchema.from_metadata({})
    assert schema.numeric_fields == {"cluster"}


@pytest.mark.parametrize(
    "top_k, offset, expected",
    [
        (0, 0, validation.Paging(validation.DEFAULT_TOP_K, 0)),
        (1, 0, validation.Paging(1, 0)),
        (100, 1000, validation.Paging(100, 1000)),
    ],
)
def test_parse_paging_accepts_bounds(top_k, offset, expected):
    assert validation.parse_paging(top_k, offset, CONFIG) == expected


@pytest.mark.parametrize(
    "top_k, offset, word",
    [
        (-1, 0, "top_k"),
        (101, 0, "top_k"),
        (10, -1, "offset"),
        (10, 1001, "offset"),
    ],
)
def test_parse_paging_refuses_out_of_range(top_k, offset, word):
    with pytest.raises(validation.RequestError, match=word):
        validation.parse_paging(top_k, offset, CONFIG)


@pytest.mark.parametrize(
    "product_id", ["", "x" * (validation.MAX_ID_LENGTH + 1)]
)
def test_parse_product_id_refuses_empty_or_oversized(product_id):
    with pytest.raises(validation.RequestError, match="product_id"):
        validation.parse_product_id(product_id)


@pytest.mark.parametrize(
    "ids",
    [[""], ["ok", "x" * 1000], ["a"] * (validation.MAX_EXCLUDE_IDS + 1)],
)
def test_parse_exclude_ids_refuses_bad_lists(ids):
    with pytest.raises(validation.RequestError, match="exclude_ids"):
        validation.parse_exclude_ids(ids)
