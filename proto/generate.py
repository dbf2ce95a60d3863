"""Regenerates the Python modules for the service definition.

Run from the repository root: ``python -m proto.generate``. The generated
files are committed so that installing Lookalike needs no protobuf compiler.
"""

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = ("proto/lookalike/v1/lookalike.proto",)


def generate(out_dir: Path = ROOT) -> None:
    """Writes the ``*_pb2*`` modules of every service under out_dir."""
    include = Path(protoc.__file__).parent / "_proto"
    for proto_file in PROTO_FILES:
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(ROOT / proto_file),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto_file}")


if __name__ == "__main__":
    generate()
