"""What the framework adapters (``starlette.py``, ``aiohttp.py``, ``django.py``)
share and keep to themselves: the event items they accept (``items.py``:
``ServerSentEvent``, ``JSONServerSentEvent``, ``ensure_bytes``) and the
saturated-loop pacer (``pacing.py``). Nothing here is imported by the edge."""
