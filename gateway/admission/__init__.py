"""The admission store: slots (pending and active leases) and the waiting queue in Redis, decided by Lua
scripts in one round trip each (``lua/``), their key space, and the deployment's epoch."""
