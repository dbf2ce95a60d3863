"""The client's filter syntax and result table (no server needed)."""

import pytest

from proto.lookalike.v1 import lookalike_pb2 as pb
from server.client import format_results, parse_filter_args


def _any_of(field: str, *values: pb.Value) -> pb.Condition:
    return pb.Condition(field=field, any_of=pb.ValueList(values=values))


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], pb.Filter()),
        (
            ["articleType=Shirts"],
            pb.Filter(
                must=[_any_of("articleType", pb.Value(string_value="Shirts"))]
            ),
        ),
        (
            ["cluster=2"],
            pb.Filter(must=[_any_of("cluster", pb.Value(int_value=2))]),
        ),
        (
            ["price=9.5"],
            pb.Filter(must=[_any_of("price", pb.Value(double_value=9.5))]),
        ),
        (
            ["baseColour=Blue|Black"],
            pb.Filter(
                must=[
                    _any_of(
                        "baseColour",
                        pb.Value(string_value="Blue"),
                        pb.Value(string_value="Black"),
                    )
                ]
            ),
        ),
        (
            ["!gender=Men"],
            pb.Filter(
                must_not=[_any_of("gender", pb.Value(string_value="Men"))]
            ),
        ),
        (
            ["year>=2011"],
            pb.Filter(
                must=[pb.Condition(field="year", range=pb.Range(gte=2011))]
            ),
        ),
        # Required ranges on one field merge into one interval.
        (
            ["year>2011", "gender=Men", "year<2015"],
            pb.Filter(
                must=[
                    pb.Condition(
                        field="year", range=pb.Range(gt=2011, lt=2015)
                    ),
                    _any_of("gender", pb.Value(string_value="Men")),
                ]
            ),
        ),
        # Excluded ranges do not: each is excluded on its own.
        (
            ["!year<2011", "!year>2014"],
            pb.Filter(
                must_not=[
                    pb.Condition(field="year", range=pb.Range(lt=2011)),
                    pb.Condition(field="year", range=pb.Range(gt=2014)),
                ]
            ),
        ),
        (
            ["year <= 2012.5"],
            pb.Filter(
                must=[pb.Condition(field="year", range=pb.Range(lte=2012.5))]
            ),
        ),
        # Not numbers: NaN and words stay strings.
        (
            ["usage=NA|NaN"],
            pb.Filter(
                must=[
                    _any_of(
                        "usage",
                        pb.Value(string_value="NA"),
                        pb.Value(string_value="NaN"),
                    )
                ]
            ),
        ),
    ],
)
def test_parse_filter_args(args, expected):
    assert parse_filter_args(args) == expected


def test_parse_filter_args_refuses_a_repeated_bound():
    with pytest.raises(ValueError, match="at most once"):
        parse_filter_args(["year>=2011", "year>=2012"])


def test_parse_filter_args_accepts_none():
    assert parse_filter_args(None) == pb.Filter()


@pytest.mark.parametrize(
    "arg",
    [
        "articleType",
        "=Shirts",
        "articleType=",
        "baseColour=Blue|",
        "year>=soon",
        "year<nan",
        "!",
        "year=>2011",
    ],
)
def test_parse_filter_args_refuses_malformed(arg):
    with pytest.raises(ValueError, match="filter"):
        parse_filter_args([arg])


def test_format_results_lists_every_result_in_rank_order():
    response = pb.QueryResponse(
        query_cluster=3,
        results=[
            pb.Result(
                product_id=product_id,
                distance=distance,
                cluster=3,
                attributes={"gender": pb.Value(string_value="Men")},
            )
            for product_id, distance in [("15970", 0.125), ("39386", 0.5)]
        ],
    )
    lines = format_results(response).splitlines()
    assert [line.split()[:4] for line in lines[2:]] == [
        ["1", "15970", "0.1250", "3"],
        ["2", "39386", "0.5000", "3"],
    ]


def test_format_results_says_when_there_are_none():
    assert "no results" in format_results(pb.QueryResponse())
