"""Real Kubernetes control plane fixture. Filled by the foundation issue."""
