"""The live queue: the ``/sessionHub`` SignalR hub, the presence of waiting clients, their positions, and
the abandonment of entries nobody waits for (with their Lua scripts in ``lua/``)."""
