"""The validator oracle: the oracle parameters and the per-market chain prices with their staleness
(`prices`), and the validators' price votes with their aggregation at the end of each block
(`votes`). The layering is a contract of `make lint`.
"""
