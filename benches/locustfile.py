"""The locustfile of the benchmarks: the SSE users of ``sse_fast.locust``.

    locust -f benches/locustfile.py SSEUser PublisherUser --headless -u 50 -r 25 -t 20s \
        --host http://127.0.0.1:8765

The same users load any other SSE server through the ``--sse-*`` options (the
stream's URL and headers, the events that count, where the stamps are in the data,
where to publish). See ``sse_fast/locust/__init__.py`` (the users, their options,
what each row means) and ``benches/LOCUST.md``.
"""

from sse_fast.locust import PublisherUser, SSEUser

__all__ = ["PublisherUser", "SSEUser"]
