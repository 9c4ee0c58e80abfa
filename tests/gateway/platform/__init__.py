"""gateway.platform: the voice platform's client and what its failures mean."""
