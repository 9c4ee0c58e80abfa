"""The Redis backplane: a lifetime manager that spans processes through Redis pub/sub.

:mod:`.lifetime` is the manager, :mod:`.subscriptions` its channel set and listener, :mod:`.protocol`
the sans-IO channel names and envelopes, :mod:`.acks` the acknowledgements of group commands.
"""

from signalr.redis.lifetime import RedisHubLifetimeManager
from signalr.redis.protocol import BackplaneLayout

__all__ = ["BackplaneLayout", "RedisHubLifetimeManager"]
