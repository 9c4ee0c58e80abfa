"""Client addresses behind trusted proxies, and anonymizer blocking from MaxMind databases."""

from geo.checker import AnonymizerChecker
from geo.client_ip import ClientAddress, TrustedProxies, normalize_ip, resolve_client_address
from geo.errors import GeoDatabaseError, GeoError
from geo.policy import AddressVerdict, BlockPolicy

__all__ = [
    "AddressVerdict",
    "AnonymizerChecker",
    "BlockPolicy",
    "ClientAddress",
    "GeoDatabaseError",
    "GeoError",
    "TrustedProxies",
    "normalize_ip",
    "resolve_client_address",
]
