"""signalr.hubs: the hub layer, bounded work per connection, fast paths, the lifetime managers."""
