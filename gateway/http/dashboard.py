"""``/dashboard``: a read-only page over the gateway's JSON APIs, and the one JSON route it
needs that the protocol has no room for (every model's versions with their lineage).

The page (``dashboard/``: HTML, three scripts, one style sheet, no build step, nothing from the
internet) polls the public routes; it calls the protected ones (canary control, fine-tune
jobs, the loop's leader) only with the API key the user types into it, which it sends in the
configured header. It never gets more rights than a ``curl`` with the same key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from model_repo import Repository
from model_repo.canary_state import read_plan
from model_repo.errors import RepositoryError
from model_repo.retention import removed_versions

from .keys import REGISTRY, SETTINGS
from .routes import _json

STATIC = Path(__file__).parent / "dashboard"
# The page loads nothing but its own files; inline script and style are refused too.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MAX_VERSIONS = 30  # the newest ones per model: a page, not an archive
MAX_EPOCHS = 500
TRAINING_METRICS = "metrics.json"  # the trainer's summary, copied into each version it publishes


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in {"app.js", "cells.js", "charts.js", "style.css"}:  # an allow-list: no path ever reaches the disk
        raise web.HTTPNotFound(text=f"no dashboard file {name[:64]!r}")
    return web.FileResponse(STATIC / name, headers=SECURITY_HEADERS)


async def overview(request: web.Request) -> web.Response:
    """Every model in the repository: its versions' lineage and the serving plan the
    manifests decide, plus what the page must know to call protected routes."""
    settings = request.app[SETTINGS]
    repo = request.app[REGISTRY].repo
    models = await asyncio.to_thread(_models, repo)
    return _json({"models": models, "api_key_required": settings.api_key is not None,
                  "api_key_header": settings.api_key_header})


def _models(repo: Repository) -> list[dict[str, Any]]:
    """Blocking: reads every listed version's manifest."""
    out = []
    for model in repo.list_models():
        try:
            versions = repo.list_versions(model)[-MAX_VERSIONS:]
            plan = read_plan(repo, model, repo.read_config(model))
        except RepositoryError as exc:  # one broken model must not blank the page
            out.append({"name": model, "error": str(exc), "versions": []})
            continue
        stable = plan.stable[-1] if plan.stable else None
        shown = [_version(repo, model, v) for v in versions] + _removed(repo, model)
        shown = sorted(shown, key=lambda v: v["version"])[-MAX_VERSIONS:]
        out.append({"name": model, "stable": stable, "canary": plan.canary, "serving": plan.serving,
                    "rejected": plan.rejected, "versions": shown})
    return out


def _removed(repo: Repository, model: str) -> list[dict[str, Any]]:
    """Versions retention removed, as the lineage log explains them (no files, no history)."""
    out = []
    for version, entry in removed_versions(repo, model).items():
        extra = {k: entry[k] for k in ("shadow", "canary", "training", "data_snapshot") if k in entry}
        out.append({"version": version, "removed": True, "created_at": entry.get("created_at"),
                    "parent_version": entry.get("parent_version"), "status": entry.get("status"),
                    "data_digest": entry.get("data_digest"), "metrics": entry.get("gate"), "parity": None,
                    "source_format": None, "extra": extra, "history": None, "removed_at": entry.get("removed_at")})
    return out


def _version(repo: Repository, model: str, version: int) -> dict[str, Any]:
    try:
        manifest = repo.read_manifest(model, version)
    except RepositoryError as exc:
        return {"version": version, "error": str(exc)}
    extra = dict(manifest.extra)
    return {"version": version, "created_at": manifest.created_at, "parent_version": manifest.parent_version,
            "status": manifest.status, "data_digest": manifest.data_digest, "metrics": manifest.metrics,
            "parity": manifest.parity, "source_format": (manifest.source or {}).get("format"),
            "extra": extra, "history": _history(repo.version_dir(model, version) / TRAINING_METRICS)}


def _history(path: Path) -> list[dict[str, float]] | None:
    """The per-epoch numbers of the job that made this version, when it left its summary."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    history = summary.get("history") if isinstance(summary, dict) else None
    if not isinstance(history, list):
        return None
    return [{k: v for k, v in h.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            for h in history[:MAX_EPOCHS] if isinstance(h, dict)]


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/dashboard", page),
        web.get("/dashboard/", page),
        web.get("/dashboard/static/{name}", asset),
        web.get("/dashboard/api/models", overview),
    ])
