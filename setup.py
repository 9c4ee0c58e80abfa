"""Packaging for the Iqra web-session gateway."""

from setuptools import find_packages, setup

setup(
    name="iqra-gateway",
    version="0.2.0",
    description=(
        "Web-session gateway between browser voice widgets and the Iqra AI voice platform: "
        "admission, rate limits, anonymizer blocking, a Redis-backed queue and a pure-Python SignalR hub."
    ),
    license="MIT",
    python_requires=">=3.11",
    packages=[
        *find_packages(include=["gateway", "gateway.*", "signalr", "signalr.*", "ratelimit", "ratelimit.*", "geo", "geo.*",
                                "simulator", "simulator.*"]),
        "gateway.static",
    ],
    # The widget and demo page live in static/ at the top of the repository; in a wheel they ship as
    # gateway.static so an installed gateway can serve them.
    package_dir={"gateway.static": "static"},
    package_data={
        "gateway.admission": ["lua/*.lua"],
        "gateway.live": ["lua/*.lua"],
        "ratelimit": ["lua/*.lua"],
        "gateway.static": ["*.js", "*.css", "*.html", "node_modules/@microsoft/signalr/dist/browser/signalr.min.js"],
    },
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
        ],
    },
    entry_points={"console_scripts": ["iqra-gateway=gateway.cli:main"]},
)
