"""The Iqra platform's public API as the gateway calls it: the client (:mod:`~gateway.platform.client`),
its wire format without I/O (:mod:`~gateway.platform.wire`) and its failures (:mod:`~gateway.platform.errors`)."""
