"""MaxMind's published test databases, taken from the ``maxminddb`` sdist on PyPI.

The sdist of ``maxminddb`` 3.2.0 ships the MaxMind-DB test-data directory, including
``GeoIP2-Anonymous-IP-Test.mmdb`` and ``GeoLite2-ASN-Test.mmdb`` (MIT / Apache-2.0). Rather than vendoring
binary files, the tests fetch that sdist once with pip into ``.cache/maxmind-testdata/`` and extract the
two files, verified against pinned SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.paths import ROOT

__all__ = ["CACHE_DIR", "SDIST_REQUIREMENT", "MaxMindTestData", "TestDataUnavailable", "fetch_maxmind_test_databases"]

SDIST_REQUIREMENT = "maxminddb==3.2.0"
_SDIST_ROOT = "maxminddb-3.2.0/tests/data/test-data/"
#: File name -> SHA-256 of the file as published in the sdist.
_FILES = {
    "GeoIP2-Anonymous-IP-Test.mmdb": "d080856c8dfb306780a2c20cf1b32fd873bd6ac262fbe5cb5ea37e497348244d",
    "GeoLite2-ASN-Test.mmdb": "75901b98ed6e58d3bd41af9985044b747a7ec0be1369f930c24f5e044427181a",
}
CACHE_DIR = ROOT / ".cache" / "maxmind-testdata"


class TestDataUnavailable(RuntimeError):
    """The sdist could not be downloaded or did not contain the expected files."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxMindTestData:
    """Paths of the extracted databases.

    :param anonymous_ip: ``GeoIP2-Anonymous-IP-Test.mmdb``.
    :param asn: ``GeoLite2-ASN-Test.mmdb``.
    """

    anonymous_ip: Path
    asn: Path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(directory: Path) -> bool:
    return all((directory / name).is_file() and _digest(directory / name) == digest for name, digest in _FILES.items())


def _download_sdist(into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
        "--no-binary", "maxminddb", SDIST_REQUIREMENT, "--dest", os.fspath(into),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise TestDataUnavailable(f"pip download {SDIST_REQUIREMENT} failed: {detail}") from None
    archives = sorted(into.glob("maxminddb-*.tar.gz"))
    if not archives:
        raise TestDataUnavailable(f"pip download {SDIST_REQUIREMENT} produced no sdist in {into}")
    return archives[0]


def fetch_maxmind_test_databases(cache_dir: Path = CACHE_DIR) -> MaxMindTestData:
    """Return the two test databases, downloading and extracting them on first use.

    :param cache_dir: where to keep them (default ``<checkout>/.cache/maxmind-testdata``).
    :raises TestDataUnavailable: when PyPI cannot be reached or the files do not match the pinned digests.
    """
    if not _cached(cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            archive = _download_sdist(Path(scratch))
            with tarfile.open(archive, "r:gz") as tar:
                for name, digest in _FILES.items():
                    try:
                        member = tar.extractfile(_SDIST_ROOT + name)
                    except KeyError:
                        member = None
                    if member is None:
                        raise TestDataUnavailable(f"{archive.name} does not contain {_SDIST_ROOT}{name}")
                    data = member.read()
                    if hashlib.sha256(data).hexdigest() != digest:
                        raise TestDataUnavailable(f"{name} in {archive.name} does not match its pinned SHA-256")
                    # Write then rename so a concurrent or interrupted run never sees half a file.
                    partial = Path(scratch) / name
                    partial.write_bytes(data)
                    os.replace(partial, cache_dir / name)
    return MaxMindTestData(
        anonymous_ip=cache_dir / "GeoIP2-Anonymous-IP-Test.mmdb",
        asn=cache_dir / "GeoLite2-ASN-Test.mmdb",
    )
