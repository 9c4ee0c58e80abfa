"""One MaxMind database file: opened and sanity-checked, looked up without ever raising, reopened when replaced.

:class:`Database` is the handle :class:`geo.checker.AnonymizerChecker` keeps per configured file. Swapping
handles between lookups, and closing the ones it replaced, is the checker's business.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import maxminddb

from geo.errors import GeoDatabaseError
from geo.warn_once import WarnOnce

__all__ = ["Database", "extension_available", "open_required"]

log = logging.getLogger("geo")

# Substrings of metadata.database_type expected for each kind of database (GeoIP2-Anonymous-IP,
# GeoIP-Anonymous-Plus; GeoLite2-ASN, GeoIP2-ISP, which also carries autonomous_system_number).
_TYPE_MARKERS = {"anonymous": ("anonymous",), "asn": ("asn", "isp")}


def extension_available() -> bool:
    """Tell whether maxminddb's C extension (needed for ``MODE_MMAP_EXT``) is importable."""
    try:
        import maxminddb.extension  # noqa: F401
    except ImportError:
        return False
    return True


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    # A rename into place changes the inode; an in-place rewrite changes mtime or size.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(slots=True, kw_only=True)
class Database:
    """One opened file, the stat signature it was opened with, and what is needed to open it again.

    :param path: the file.
    :param kind: ``"anonymous"`` or ``"asn"``, for the type sanity check.
    :param mode: the ``maxminddb`` open mode.
    :param reader: the open ``maxminddb`` reader.
    :param signature: device, inode, size and mtime of the file that was opened.
    :param warnings: where lookup and reload problems are reported, once per kind.
    """

    path: str
    kind: str
    mode: int
    reader: Any
    signature: tuple[int, int, int, int]
    warnings: WarnOnce

    @classmethod
    def open(cls, path: str, kind: str, mode: int, warnings: WarnOnce) -> Database:
        """Open and sanity-check one database; raises ``OSError``, ``InvalidDatabaseError`` or ``ValueError``."""
        # Opening it ourselves first turns "unreadable" (permissions, a directory) into a clear OSError
        # instead of the extension's generic "is this a valid MaxMind DB file?".
        with open(path, "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))
        reader = maxminddb.open_database(path, mode)
        database_type = str(reader.metadata().database_type)
        if not any(marker in database_type.lower() for marker in _TYPE_MARKERS[kind]):
            # A wrong file (say GeoLite2-City) opens fine but silently blocks nothing; say so loudly.
            log.warning("%s has database_type %r, which does not look like an %s database", path, database_type, kind)
        return cls(path=path, kind=kind, mode=mode, reader=reader, signature=signature, warnings=warnings)

    def lookup(self, ip: str) -> dict[str, Any] | None:
        """Return the record for ``ip``, or ``None`` for unknown, empty or non-map records and for errors."""
        try:
            record = self.reader.get(ip)
        except ValueError as exc:
            if self.reader.closed:
                # Only after close(): a reader retired by a reload stays open for a whole timer period.
                return None
            # An IPv6 address in an IPv4-only database.
            self.warnings.warning(f"lookup:{self.path}", "lookup of %s in %s failed (%s); clean", ip, self.path, exc)
            return None
        except maxminddb.InvalidDatabaseError as exc:
            # Fail open: a corrupt data section must not lock every user out; the next good file fixes it.
            self.warnings.warning(f"corrupt:{self.path}", "%s is corrupt (%s); addresses are clean", self.path, exc)
            return None
        return record if record and isinstance(record, dict) else None

    def reopened(self) -> Database:
        """Return a new handle if the file on disk was replaced and the replacement opens, else ``self``.

        A file that is missing or fails to open is logged (once per file version) and ``self`` stays in use.
        """
        stat_key = f"stat:{self.path}"
        try:
            signature = _signature(os.stat(self.path))
        except OSError as exc:
            self.warnings.warning(stat_key, "cannot stat %s (%s); keeping the loaded database", self.path, exc)
            return self
        self.warnings.forget(stat_key)  # warn again if it disappears again later
        if signature == self.signature:
            return self
        try:
            replacement = Database.open(self.path, self.kind, self.mode, self.warnings)
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
            self.warnings.warning(
                f"reload:{self.path}:{signature}",
                "replacement %s cannot be opened (%s); keeping the loaded database",
                self.path,
                exc,
            )
            return self
        # If the file was replaced again between open's stat and its open, the recorded signature is the
        # older one and the next call simply reopens: one extra reload, never a wrong one.
        return replacement


def open_required(path: str, kind: str, mode: int, warnings: WarnOnce) -> Database:
    """Open a configured database for start-up.

    :raises GeoDatabaseError: naming the file, if it is missing, unreadable or not a MaxMind DB.
    """
    try:
        return Database.open(path, kind, mode, warnings)
    except FileNotFoundError:
        raise GeoDatabaseError(path, "database file not found") from None
    except OSError as exc:
        raise GeoDatabaseError(path, f"cannot read database file ({exc.strerror or exc})") from None
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise GeoDatabaseError(path, f"not a valid MaxMind DB ({exc})") from None
