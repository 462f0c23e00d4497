"""The SDK's private helpers: argument checks, job names, source packing, log following, TensorBoard."""
