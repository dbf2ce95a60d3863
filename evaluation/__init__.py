"""Retrieval evaluation (``lookalike eval``) and the visual report
(``lookalike report``) of a trained run."""
