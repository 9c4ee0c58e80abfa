"""Headless Chromium: the voice widget, the demo page and the official SignalR browser bundle."""
