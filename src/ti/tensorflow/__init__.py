"""`ti.tensorflow.TensorFlow`: the TI SDK's TensorFlow estimator (`from ti.tensorflow import TensorFlow`)."""

from ti.tensorflow.estimator import TensorFlow

# The TI document spells it both ways.
Tensorflow = TensorFlow

__all__ = ["TensorFlow", "Tensorflow"]
