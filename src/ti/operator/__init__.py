"""What runs in the operator pod: settings, the pure core (render, status, reconcile) and the
controller that applies its plans through the Kubernetes API.

Only `controller`, `ratelimit` and `metrics` may import the Kubernetes client; render, status and
reconcile stay pure, so local mode uses them too (tests/unit/test_layering.py checks both).
"""
