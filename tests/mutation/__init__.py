"""Mutation testing of the consensus core: `mutants` generates, `python -m tests.mutation` runs."""
