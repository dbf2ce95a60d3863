"""The filter language shared by the store backends and the gRPC service.

A ``Filter`` keeps the products for which every condition in ``must`` holds
and no condition in ``must_not`` does. Each backend translates it into its
own query models; the server builds it from the request.
"""

import dataclasses

# Payload field that holds a product's k-means cluster label.
CLUSTER_FIELD = "cluster"

Scalar = str | int | float | bool


@dataclasses.dataclass(frozen=True)
class Match:
    """The field equals one of ``values`` (one value: plain equality)."""

    field: str
    values: tuple[Scalar, ...]


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric field lies within the given bounds; None is open."""

    field: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


Condition = Match | Range


@dataclasses.dataclass(frozen=True)
class Filter:
    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.must or self.must_not)

    def matches(self, payload: dict) -> bool:
        """Whether a payload satisfies the filter; the reference semantics
        that tests hold every backend's results to."""
        return all(_holds(c, payload) for c in self.must) and not any(
            _holds(c, payload) for c in self.must_not
        )


def _holds(condition: Condition, payload: dict) -> bool:
    value = payload.get(condition.field)
    if isinstance(condition, Match):
        return value is not None and value in condition.values
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    bounds = (
        (condition.gte, lambda b: value >= b),
        (condition.gt, lambda b: value > b),
        (condition.lte, lambda b: value <= b),
        (condition.lt, lambda b: value < b),
    )
    return all(test(bound) for bound, test in bounds if bound is not None)
