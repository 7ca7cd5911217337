"""Slow, obviously-correct pure-NumPy/SciPy reference implementations used by the tests."""
