"""Typed keys for the state an application shares (never module globals)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from .budget import MemoryBudget
from .dataplane import DataPlane
from .registry import Registry
from .settings import Settings
from .stats import StatsBook

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
DATAPLANE = web.AppKey("dataplane", DataPlane)
STATS = web.AppKey("stats", StatsBook)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
BUDGET = web.AppKey("decode_budget", MemoryBudget)
