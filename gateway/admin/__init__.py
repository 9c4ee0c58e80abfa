"""The admin API (``/api/admin/``): what an operator sees of the whole deployment and the few things one may
change at runtime: a pause of dispatching, the global cap, a session whose webhook never came, a waiting
request that must go."""
