"""The logs sidecar: ship the app's log files from the shared volume."""
