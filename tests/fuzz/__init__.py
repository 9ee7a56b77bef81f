"""Fuzzing of every decoder and loader that reads outside bytes: the targets, their seeds and
mutations, the long-run command (`python -m tests.fuzz`) and its short form in the tests."""
