"""``sidecarkit agent proxy``: the HTTP/1.1 proxy sidecar, inbound and outbound.

The data path, in the order a request meets it: ``forwarding`` (client connections, parse,
queue) → ``heads`` (check and rewrite, pure) → ``services`` (the listener's service) →
``balancing`` (pick an endpoint, eject outliers; pure) → ``pools`` (keep-alive connections to
endpoints). ``budgets`` bounds retries (pure), ``telemetry`` keeps the golden metrics (pure),
``discovery`` feeds endpoint sets, ``running`` starts and drains it all.
"""
