"""Benchmarks (``make bench``): kept out of the default test run."""
