"""Installing the gateway: the wheel on its own in a fresh virtual environment, and the setup scripts."""
