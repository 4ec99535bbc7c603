"""The vendored upstream suites run only in their own pytest process (harness.py), with
their own configuration: the repository's run must not collect them."""

collect_ignore = ["sse_starlette_3_7_0", "aiohttp_sse_3_0", "shims", "_inner", "harness.py"]
