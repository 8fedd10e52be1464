"""Typed keys for the state the HTTP application shares (never module globals)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..core.budget import MemoryBudget
from ..core.dataplane import DataPlane
from ..core.registry import Registry
from ..core.shm import SharedMemoryRegions
from ..core.stats import StatsBook
from ..loop.canary import CanaryController
from ..loop.feedback import FeedbackService
from ..loop.jobs.manager import JobManager
from ..server import Gateway
from ..settings import Settings

GATEWAY = web.AppKey("gateway", Gateway)
SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
DATAPLANE = web.AppKey("dataplane", DataPlane)
STATS = web.AppKey("stats", StatsBook)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
BUDGET = web.AppKey("decode_budget", MemoryBudget)
FEEDBACK = web.AppKey("feedback", FeedbackService)
CANARY = web.AppKey("canary", CanaryController)
JOBS = web.AppKey("jobs", JobManager)
SHM = web.AppKey("shared_memory", SharedMemoryRegions)
