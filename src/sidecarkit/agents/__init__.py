"""The sidecar roles: ``sidecarkit agent ROLE``. Roles never import one another."""
