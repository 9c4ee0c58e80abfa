"""Client addresses behind trusted proxies, and anonymizer blocking from MaxMind databases."""

from geo.checker import AnonymizerChecker, BlockPolicy, AddressVerdict
from geo.client_ip import ClientAddress, TrustedProxies, normalize_ip, resolve_client_address
from geo.errors import GeoDatabaseError, GeoError

__all__ = [
    "AnonymizerChecker",
    "BlockPolicy",
    "ClientAddress",
    "GeoDatabaseError",
    "GeoError",
    "TrustedProxies",
    "AddressVerdict",
    "normalize_ip",
    "resolve_client_address",
]
