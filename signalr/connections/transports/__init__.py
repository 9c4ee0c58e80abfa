"""Framework-neutral transports: each one only moves bytes between HTTP and a connection."""
