"""Kubernetes object handling: where workloads keep their pods, and YAML streams kept verbatim."""
