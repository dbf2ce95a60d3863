"""The gRPC service definition and the Python modules generated from it.

Regenerate after editing ``lookalike/v1/lookalike.proto`` with
``python -m proto.generate``; a test fails while the generated modules are
stale.
"""
