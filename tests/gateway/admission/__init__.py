"""gateway.admission: the Redis store of slots and the queue, its scripts, the store epoch."""
