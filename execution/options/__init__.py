"""Options: the deterministic pricing core so far. `fixedpoint` is integer-only fixed-point math
(exp, ln, sqrt, the standard normal pdf and CDF, each with a tested error bound) and `pricing` is
Black-Scholes for European calls and puts (price, delta, gamma, vega, theta) on top of it. Both
are pure functions of integers: no state, no floats, no imports from the rest of `execution`.
"""
