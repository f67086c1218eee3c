"""Benchmarks and the dense reference implementations they compare against."""
