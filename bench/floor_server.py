"""The bare aiohttp floor: what any Python server on this stack pays per request.

``POST /v2/models/{model}/infer`` reads the body and answers a fixed reply of the size the
real model's answer has (``--reply FILE``, with ``--header-length N`` for a binary reply);
nothing is parsed, validated, queued or computed. bench/wrk_peers.py runs it as the floor
that tunegate's per-request cost is measured against.

    python bench/floor_server.py --port 8770 --reply reply.bin [--header-length 123]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", type=Path, required=True)
    parser.add_argument("--header-length", type=int, help="Inference-Header-Content-Length of a binary reply")
    args = parser.parse_args()
    reply = args.reply.read_bytes()
    headers = {"Inference-Header-Content-Length": str(args.header_length)} if args.header_length else {}
    content_type = "application/octet-stream" if args.header_length else "application/json"

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply, content_type=content_type, headers=headers)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
