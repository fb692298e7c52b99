"""``rconv serve`` and ``rconv worker``: a conversion service fed by registry webhooks.

A thin shell over ``convert.api``: the HTTP side (``app``) turns webhook payloads
(``payload``) into conversion tasks by the operator's rules (``rules``); a task is data
(``task``) handed to Celery (``engine``), whose workers run ``worker.run`` — the same library
call the command line makes. The service keeps an index of the tasks it accepted (``store``),
follows their state in the engine's result backend (``tracker``) and exports Prometheus
metrics (``metrics``). Nothing here is imported by ``rconv convert``: Celery, Starlette and
uvicorn load only inside the ``serve`` and ``worker`` commands (``run``).

Upstream behaviour followed: goharbor/acceleration-service (acceld) for the API routes, the
Harbor webhook payload, ``converter.rules`` and ``webhook.auth_header``; the CNCF distribution
registry's notification envelope for ``/api/v1/notifications``.
"""
