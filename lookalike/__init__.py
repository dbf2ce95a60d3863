"""Lookalike: visually similar products for online stores.

The ``lookalike`` command line (``lookalike.cli``) drives the three parts:
``encoder`` (catalog loading and the Flax autoencoder), ``indexer`` (k-means
and the Qdrant store) and ``server`` (the gRPC service). ``lookalike.jobs``
holds the jobs that chain them, so tests call the same code as the CLI.
"""
