"""Workload identity: SPIFFE IDs, a small CA that issues them, and TLS built on them.

``spiffe`` and ``authority`` are pure (X.509 with ``cryptography``, no I/O): what an identity
looks like and how a certificate for one is made. ``proving`` checks what a caller presents
(a bootstrap token, or a ServiceAccount token through the TokenReview API). ``serving`` is the
CA's HTTPS endpoint and ``command`` the ``sidecarkit ca`` commands. ``workload`` is the client
side a sidecar uses to get and renew its certificate, and ``contexts`` builds the TLS contexts
(termination, mTLS) and reads the verified peer identity from a connection.
"""
