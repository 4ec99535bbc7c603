"""Live examples of sse_fast in a browser, all served by ``python -m examples``.

Each example is a small application on sse_fast and a page:

* ``/datastar``: platform statistics (``datastar-patch-signals`` every 3 s) and
  an activity feed (``datastar-patch-elements``, newest first, at most 10),
  through the edge's hub (``examples.datastar_stats``).
* ``/htmx``: a sensor feed swapped in by the htmx sse extension (multi-line
  HTML fragments, connection status, reconnect with backoff, at most 50 kept),
  through the hub (``examples.htmx_sensors``).
* ``/chat``: a chat on the Starlette adapter: POST to send, join/leave events,
  the last 10 messages on connect, resume without duplicates, messages kept in
  a file so a restart loses none (``examples.chat``).
* ``/tokens``: token streaming from a simulated model (``token``, ``progress``,
  ``done``) and a long task (``progress``, ``complete``), on the Starlette
  adapter (``examples.tokens``).
* ``/dashboard``: the edge itself, live: connections, events/s, topics
  (``examples.dashboard``).
* ``/reference``: a plain ``EventSource`` page showing each event's type, id
  and data, the ``retry`` the server set, and its resume
  (``examples.reference``).
* ``/typed``: typed channels end to end, BuildAmp style: events declared in
  Python, checked by the edge, received by a generated TypeScript client
  (``examples.typed_events``).

The JavaScript libraries are pinned and served locally (``examples.vendor``).
"""
