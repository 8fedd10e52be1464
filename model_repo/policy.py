"""Triton's version policy: which of a model's versions are available to serve."""

from __future__ import annotations

from collections.abc import Iterable

from tritonclient.grpc import model_config_pb2 as mc


def available_versions(config: mc.ModelConfig, versions: Iterable[int]) -> list[int]:
    """Versions the policy makes available, ascending. Triton's default is ``latest { 1 }``."""
    present = sorted(set(versions))
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return present
    if which == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    n = policy.latest.num_versions if which == "latest" else 1
    return present[-max(n, 1):] if present else []


def describe(config: mc.ModelConfig) -> str:
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        return "specific " + ",".join(str(v) for v in policy.specific.versions)
    return f"latest {policy.latest.num_versions if which == 'latest' else 1}"
