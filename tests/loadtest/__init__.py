"""The Locust load-test kit (loadtest/) run against the demo stack."""
