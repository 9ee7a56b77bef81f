"""Tests of the primitives package."""
