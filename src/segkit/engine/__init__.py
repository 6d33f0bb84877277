"""Training (Lightning), inference and evaluation engines."""
