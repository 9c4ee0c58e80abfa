"""simulator: the voice platform simulator the gateway is tested and demonstrated against."""
