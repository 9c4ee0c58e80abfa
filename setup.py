"""Packaging for the Iqra web-session gateway.

``pip install -e .`` (what scripts/demo.sh and scripts/test.sh run) serves the browser files from the
checkout's static/. ``pip wheel .`` copies them into the wheel as gateway/static/, with the npm bundles the
gateway serves, so an installed wheel runs ``iqra-gateway demo`` without a checkout or npm.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: The site's own files: the flat files at the top of static/ (gateway/http/static_site.py serves them) and
#: the admin dashboard's in static/admin/ (gateway/http/dashboard.py).
STATIC_SITE_FILES = ["*.html", "*.css", "*.js", "*.svg", "*.png", "*.ico", "*.webp",
                     "admin/*.html", "admin/*.css", "admin/*.js"]

#: The npm bundles the gateway serves, under static/node_modules/ (installed by `npm ci --prefix static`),
#: one line per file or glob. A wheel build stops when one is missing: the wheel would be broken without it.
NPM_BUNDLES = [
    "@microsoft/signalr/dist/browser/signalr.min.js",  # /static/vendor/signalr.js
    # What /docs loads (gateway/http/docs.py), with the licence and notice that go with it.
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/LICENSE",
    "swagger-ui-dist/NOTICE",
    # What /admin draws its charts with (gateway/http/dashboard.py), and its licence.
    "uplot/dist/uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css",
    "uplot/LICENSE",
]

#: What loadtest/ imports: Locust 2.x (which brings gevent) and websocket-client, on which its SignalR client
#: and audio calls run (Locust patches sockets for gevent, so websocket-client's I/O cooperates).
LOADTEST_REQUIRES = ["locust>=2.20,<3", "websocket-client>=1.6"]


def static_files(*, strict: bool) -> list[str]:
    """The files under static/ a wheel carries, as paths relative to the project root.

    :param strict: raise when an npm bundle is missing (a wheel build) instead of leaving it out (metadata,
        which pip also prepares for editable installs before npm has run).
    """
    files = [path for pattern in STATIC_SITE_FILES for path in glob.glob(os.path.join("static", pattern))]
    for pattern in NPM_BUNDLES:
        found = glob.glob(os.path.join("static", "node_modules", pattern))
        if not found and strict:
            raise SystemExit(f"static/node_modules/{pattern} is missing: run `npm ci --prefix static` (or "
                             "`bash scripts/demo.sh`) before building the wheel.")
        files += found
    return sorted(path for path in files if os.path.isfile(path))


class BuildPyWithStatic(build_py):
    """build_py that also copies static/ into the build as gateway/static/ (same layout below it)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install serves the checkout's static/ directly
        target_root = os.path.join(self.build_lib, "gateway", "static")
        shutil.rmtree(target_root, ignore_errors=True)  # no file of an earlier build lingers in this one
        for source, target in self._static_mapping(strict=True):
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target)

    def _static_mapping(self, *, strict: bool) -> list[tuple[str, str]]:
        target_root = os.path.join(self.build_lib, "gateway", "static")
        return [(path, os.path.join(target_root, os.path.relpath(path, "static")))
                for path in static_files(strict=strict)]

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, *(target for _, target in self._static_mapping(strict=False))]

    def get_source_files(self) -> list[str]:
        # An sdist carries the same files, so a wheel built from it has them too.
        return [*super().get_source_files(), *static_files(strict=False)]


setup(
    name="iqra-gateway",
    version="0.2.0",
    description=(
        "Web-session gateway between browser voice widgets and the Iqra AI voice platform: "
        "admission, rate limits, anonymizer blocking, a Redis-backed queue and a pure-Python SignalR hub."
    ),
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway", "gateway.*", "signalr", "signalr.*", "ratelimit", "ratelimit.*",
                                    "geo", "geo.*", "simulator", "simulator.*"]),
    # Every package sits where its name says (a flat layout), so an editable install is a plain .pth file;
    # a package mapped elsewhere makes setuptools install an import hook and warn on every install.
    package_dir={"": "."},
    package_data={
        "gateway.admission": ["lua/*.lua"],
        "gateway.live": ["lua/*.lua"],
        "ratelimit": ["lua/*.lua"],
    },
    cmdclass={"build_py": BuildPyWithStatic},
    install_requires=[
        # signalr/tornado/ws_reader.py and ws_writer.py read and write WebSocket frames themselves on the hot path (tested with 6.6).
        "tornado>=6.4,<7",
        # hiredis parses Redis replies in C: about a tenth of the admission path's CPU otherwise.
        # gateway/store.py tunes the asyncio connection of redis-py 8 (C packing, no timer on writes that
        # cannot block); it is tested against 8.x only.
        "redis[hiredis]>=8.0,<9",
        "maxminddb>=2.5",
        "ujson>=5.8",
        "msgpack>=1.0.5",
        # The embedded store runs our Lua scripts in-process; the "lua" extra brings lupa.
        "fakeredis[lua]>=2.20",
        # --log-format json; 3.1 moved the formatter to pythonjsonlogger.json, where gateway/logs imports it.
        "python-json-logger>=3.1",
        # /metrics: the exposition, its parser (the tests) and the multiprocess mode of serve --processes;
        # 0.20 has every piece used (live gauges, disable_created_metrics, the content negotiation).
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "pytest-asyncio>=0.23",
            "pytest-timeout>=2.2",
            "hypothesis>=6.90",
            "mmdb-writer>=0.2.5",
            "signalrcore>=1.0.2",
            "pysignalr>=1.3.3",
            # Drives Debian's Chromium in the browser tests; its own browser download is never used.
            "playwright>=1.40",
            # The SignalR benchmark's reference server; its smoke test runs in the suite so the bench cannot rot.
            "aiosignalr>=0.1",
            # The OpenAPI document's tests: the document validated, the gateway fuzzed with it (the 4.x API: its
            # config keys, fuzz dictionaries and hooks), and the session request's schema checked body by body.
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.25,<5",
            "jsonschema>=4.18",
            # The load-test kit's smoke test runs loadtest/locustfile.py headless against the demo.
            *LOADTEST_REQUIRES,
        ],
        # loadtest/: the Locust file operators run against their deployment (see the README's "Load testing").
        "loadtest": LOADTEST_REQUIRES,
    },
    entry_points={"console_scripts": ["iqra-gateway=gateway.cli:main"]},
)
