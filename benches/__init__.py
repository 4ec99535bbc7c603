"""Benchmarks for sse_fast, in three tiers (harness, maintained suites, experiments: see
``benches/README.md``). Not in the default test run (``testpaths = ["tests"]``); ``.ci/run``
runs ``python -m pytest benches``."""
