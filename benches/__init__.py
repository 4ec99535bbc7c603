"""Benchmarks for sse_fast (not part of the default test run: testpaths = ["tests"])."""
