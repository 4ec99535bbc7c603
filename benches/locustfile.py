"""The locustfile of the benchmarks: the SSE users of ``sse_fast.locust``.

    locust -f benches/locustfile.py SSEUser PublisherUser --headless -u 50 -r 25 -t 20s \
        --host http://127.0.0.1:8765

See ``sse_fast/locust.py`` (the users, their options, what each row means) and
``benches/LOCUST.md``.
"""

from sse_fast.locust import PublisherUser, SSEUser

__all__ = ["PublisherUser", "SSEUser"]
