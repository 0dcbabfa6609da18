"""The local Pod runner: a Pod spec as processes, with the kubelet's sidecar lifecycle."""
