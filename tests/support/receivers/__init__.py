"""Local receivers for the logs agent's HTTP sinks, each implementing one documented API.

None of them is the real product: Loki, Elasticsearch and an OpenTelemetry collector cannot be
installed from the package registries this project may use. Each is instead a local server that
implements the documented wire contract faithfully, including the parts a sink can get wrong:
content types, gzip, body shapes, timestamp forms, per-item bulk results, Loki's de-duplication,
OTLP partial success. Each validates strictly and refuses a malformed body the way the real
service would (status and a message in its style), so a test passing against it says something.

One module per API: ``loki`` (push), ``elasticsearch`` (``_bulk``), ``otlp`` (OTLP/HTTP logs,
JSON), ``ndjson`` (generic NDJSON or JSON-array endpoints); ``base`` holds the server, thread and
controls they share.
"""
