"""``sidecarkit agent proxy``: the HTTP/1.1 proxy sidecar, inbound and outbound.

The data path, in the order a request meets it: ``forwarding`` (client connections: parse,
queue) → ``heads`` (check and rewrite; pure) → ``routing`` (HTTP-proxy mode; pure) →
``exchanges`` (one request's way and its endings) → ``services`` (the listener's service) →
``balancing`` (pick an endpoint, eject outliers; pure) → ``pools`` (keep-alive connections to
endpoints). ``relaying`` is the L4 mode, ``budgets`` bounds retries (pure), ``telemetry``
keeps the golden metrics (pure), ``discovery`` feeds endpoint sets, ``running`` starts and
drains it all. ``securing`` (workload identity, mTLS) and ``terminating`` (TLS from files) put
TLS on the connections; ``tlsconfig`` holds their settings (pure).
"""
