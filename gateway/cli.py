"""``tunegate serve``: serve the repository over HTTP (KServe v2 / Triton protocol)."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="model repository to serve (env TUNEGATE_REPO)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    parser.add_argument("--config", metavar="FILE", help="settings file: .toml, .json (or .yaml with PyYAML)")
    parser.add_argument("--model-control", choices=["poll", "explicit", "none"],
                        help="poll: follow the repository (default); explicit: load via the API; none: static")
    parser.add_argument("--provider", choices=["auto", "cuda", "cpu"], help="execution provider for every model")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    from .app import AccessLogger, create_app
    from .settings import load_settings

    overrides = {"repo": args.repo, "host": args.host, "port": args.port, "model_control": args.model_control,
                 "log_level": args.log_level}
    if args.provider:
        overrides["runtime"] = {"provider": args.provider}  # merged into the file's [runtime] table
    settings = load_settings(args.config, **overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.exit_timeout_seconds,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=lambda text: logging.getLogger("tunegate.gateway").info(
            "serving %s on http://%s:%s (KServe v2)", settings.repo, settings.host, settings.port),
    )
    return 0
