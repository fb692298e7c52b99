"""``rconv serve`` and ``rconv worker``: a conversion service fed by registry webhooks.

A thin shell over ``convert.api``: the HTTP side (``app``) turns webhook payloads
(``payload``) into conversion tasks by the operator's rules (``rules``, settings in
``config``), deduplicated by idempotency key (``service``); a task is data (``task``) handed
to Celery (``engine``), whose workers run ``worker.execute`` — the same library call the
command line makes. The service keeps an index of the tasks it accepted (``store``), follows
their state in the engine's result backend (``tracker``), exports Prometheus metrics
(``metrics``) and watches its own worker process (``local``). Nothing here is imported by
``rconv convert``: Celery, Starlette and uvicorn load only inside the ``serve`` and
``worker`` commands (``run``).

Upstream behaviour followed: goharbor/acceleration-service (acceld) for the API routes, the
Harbor webhook payload, ``converter.rules`` and ``webhook.auth_header``; the CNCF distribution
registry's notification envelope for ``/api/v1/notifications``.
"""
