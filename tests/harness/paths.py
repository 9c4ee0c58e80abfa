"""Where things are in the checkout, for tests that start processes or read files by path."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository root: the working directory and ``PYTHONPATH`` of every process a test starts."""

CONFIG_SAMPLES = ROOT / "tests" / "gateway" / "config" / "data"
"""Sample ``appsettings.json`` files: the original middleware's and one with every key of ours."""

SIGNALR_CLIENTS = ROOT / "tests" / "signalr" / "interop"
"""The Node scripts (and their npm packages) that drive the example hub with ``@microsoft/signalr``."""

SESSION_HUB_CLIENTS = ROOT / "tests" / "gateway" / "live" / "interop"
"""The Node scripts (and their npm packages) that drive ``/sessionHub`` with ``@microsoft/signalr``."""
