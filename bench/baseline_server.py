"""The baseline of the admission benchmark: a bare Tornado handler that does one EVALSHA and answers.

It costs what any Tornado endpoint backed by one Redis script costs, with none of the gateway's work
(validation, IP resolution, queue bookkeeping). The gateway's queued path is compared with it.
"""

from __future__ import annotations

import argparse
import asyncio

import redis.asyncio as aioredis
import tornado.web

SCRIPT = "return redis.call('INCR', KEYS[1])"


class OneEvalshaHandler(tornado.web.RequestHandler):
    def initialize(self, script) -> None:  # type: ignore[no-untyped-def]
        self.script = script

    async def post(self) -> None:
        value = await self.script(keys=["bench:baseline"])
        self.set_status(202)
        self.set_header("Content-Type", "application/json")
        self.finish(b'{"status":"queued","n":%d}' % value)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    client = aioredis.Redis.from_url(args.redis_url)
    script = client.register_script(SCRIPT)
    app = tornado.web.Application([(r"/api/session/request", OneEvalshaHandler, {"script": script})])
    app.listen(args.port, address="127.0.0.1")
    print(f"listening on {args.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
