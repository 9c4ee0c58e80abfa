"""The Iqra platform's public API as the gateway calls it: web-session initiation and billing usage."""
