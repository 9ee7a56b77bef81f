"""Positions: the holder index with its healthy price bands (`holders`), the `Position` record
and its storage (`position`), the cumulative funding index, the
funding pools and the lazy settlement of a position against the index (`funding_index`), and cross
margin: account value, requirements, the placement check (`margin`). Lowest first; the layering is
a contract of `make lint`.
"""
