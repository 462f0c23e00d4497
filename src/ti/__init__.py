"""ti-operator: Tencent TI-ONE's TensorFlow training workflow on any Kubernetes cluster."""

__version__ = "0.1.0"
