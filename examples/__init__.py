"""Runnable examples for queryprof (``python -m examples.demo``)."""
