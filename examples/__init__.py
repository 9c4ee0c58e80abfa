"""Runnable examples of the ``signalr`` package (run from the checkout root, e.g. ``python -m examples.chat``)."""
