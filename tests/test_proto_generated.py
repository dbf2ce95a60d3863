"""The committed generated modules match the service definition."""

from pathlib import Path

import pytest

from proto import generate

GENERATED = (
    "proto/lookalike/v1/lookalike_pb2.py",
    "proto/lookalike/v1/lookalike_pb2.pyi",
    "proto/lookalike/v1/lookalike_pb2_grpc.py",
)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("generated")
    generate.generate(out_dir)
    return out_dir


@pytest.mark.parametrize("path", GENERATED)
def test_generated_module_is_up_to_date(regenerated, path):
    committed = (generate.ROOT / path).read_bytes()
    assert (regenerated / path).read_bytes() == committed, (
        f"{path} is stale; run `python -m proto.generate`"
    )
