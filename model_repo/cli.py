"""``tunegate models list|show|verify|rm|gc|promote|rollback``.

``--repo`` and ``--json`` are accepted before or after the action, as a user types them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .canary_state import PROMOTED, REJECTED, ROLLED_BACK, ServingPlan, decision_report, is_pending, read_plan
from .config import config_to_dict
from .errors import IntegrityError, RepositoryError, VersionNotFound
from .loop_gc import gc_model, gc_requests
from .policy import describe
from .repository import Repository
from .retention import RetentionPolicy, read_lineage

CANARY_NOTE = ("a fine-tuned version on trial: with loop.canary on (the default) a gateway serves it to "
               "loop.canary_fraction of requests (default 10%) beside the stable version, until its canary "
               "window or `tunegate models promote|rollback MODEL` decides")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "list", "models, their versions, the stable ones and any pending canary")
    show = _action(actions, "show", "a model's config, serving state and a version's manifest")
    show.add_argument("model")
    show.add_argument("--version", help="default: the newest version serving")
    verify = _action(actions, "verify", "check the sha256 of every file of a version")
    verify.add_argument("model")
    verify.add_argument("--version", help="default: every version")
    rm = _action(actions, "rm", "remove a version, or keep only the newest N")
    rm.add_argument("model")
    which = rm.add_mutually_exclusive_group(required=True)
    which.add_argument("--version")
    which.add_argument("--keep-last", type=int, metavar="N")
    gc = _action(actions, "gc", "apply the loop's retention policy by hand: old versions (their lineage "
                 "is logged first), finished job directories, decided canaries' evidence, stale files")
    gc.add_argument("model")
    gc.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    defaults = RetentionPolicy()
    gc.add_argument("--keep-versions", type=int, default=defaults.keep_versions, metavar="N",
                    help=f"decided versions kept besides stable, canary, warm and a running job's base "
                         f"(default {defaults.keep_versions})")
    gc.add_argument("--keep-jobs", type=int, default=defaults.keep_jobs, metavar="N",
                    help=f"finished job directories kept (default {defaults.keep_jobs})")
    gc.add_argument("--stale-seconds", type=float, default=defaults.stale_seconds, metavar="S",
                    help=f"files of processes silent this long are removed (default {defaults.stale_seconds:g})")
    gc.add_argument("--jobs-dir", help="the gateway's loop.jobs_dir (default: <repo>/.jobs)")
    promote = _action(actions, "promote", "make the pending canary an ordinary version (it then serves alone)")
    promote.add_argument("model")
    promote.add_argument("--version", help="a pending fine-tuned version (default: the canary)")
    rollback = _action(actions, "rollback", "reject the pending canary (or --version): it never serves again")
    rollback.add_argument("model")
    rollback.add_argument("--version", help="default: the pending canary")


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    # Under an action the defaults are SUPPRESS, so a flag given before the action is kept.
    parser.add_argument("--repo", default=default,
                        help="model repository directory (default: $TUNEGATE_REPO)")
    parser.add_argument("--json", action="store_true", default=False if default is None else default,
                        help="print JSON instead of text")


def _action(actions: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text, description=help_text)
    _common(parser, argparse.SUPPRESS)
    parser.set_defaults(_usage=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    root = args.repo or os.environ.get("TUNEGATE_REPO")
    if not root:
        args._usage.error("the repository is needed: --repo DIR (or TUNEGATE_REPO=DIR)")
    repo = Repository(root)
    if not repo.root.is_dir():
        raise RepositoryError(f"repository {repo.root} does not exist (expected a directory)")
    handlers = {"list": _list, "show": _show, "verify": _verify, "rm": _rm, "gc": _gc, "promote": _promote,
                "rollback": _rollback}
    return handlers[args.action](repo, args)


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _versions(numbers: list[int]) -> str:
    return ",".join(map(str, numbers)) or "-"


def _state(repo: Repository, model: str) -> tuple[Any, ServingPlan]:
    config = repo.read_config(model)
    return config, read_plan(repo, model, config, canary=True)


def _plan_dict(plan: ServingPlan) -> dict[str, Any]:
    return {"stable": plan.stable, "canary": plan.canary, "pending": plan.pending, "rejected": plan.rejected,
            "retired": plan.retired}


def _list(repo: Repository, args: argparse.Namespace) -> int:
    rows = []
    for model in repo.list_models():
        config, plan = _state(repo, model)
        versions = repo.list_versions(model)
        rows.append({
            "model": model,
            "versions": versions,
            "available": repo.available_versions(model),
            "version_policy": describe(config),
            "max_batch_size": config.max_batch_size,
            **_plan_dict(plan),
        })
    lines = [f"{'MODEL':<24} {'VERSIONS':<16} {'STABLE':<8} {'CANARY':<8} POLICY"]
    for r in rows:
        lines.append(f"{r['model']:<24} {_versions(r['versions']):<16} {_versions(r['stable']):<8} "
                     f"{r['canary'] or '-'!s:<8} {r['version_policy']}")
    if not rows:
        lines.append(f"(no models in {repo.root})")
    if any(r["canary"] for r in rows):
        lines.append(f"CANARY: {CANARY_NOTE}")
    _emit(args, rows, "\n".join(lines))
    return 0


def _show(repo: Repository, args: argparse.Namespace) -> int:
    config, plan = _state(repo, args.model)
    # Any version there can be shown (the stable one beside a canary, a rejected one), not
    # only those the version policy alone would serve.
    version = args.version or (plan.serving[-1] if plan.serving else None)
    removed = None
    try:
        manifest = repo.read_manifest(args.model, version).to_dict() if version else None
    except VersionNotFound:
        # Removed by retention: its lineage was logged before its files went.
        removed = read_lineage(repo.model_dir(args.model)).get(int(version))
        if removed is None:
            raise
        manifest = None
    data = {"model": args.model, "versions": repo.list_versions(args.model), **_plan_dict(plan),
            "config": config_to_dict(config), "manifest": manifest}
    if removed is not None:
        data["removed"] = removed
        print(f"{args.model}: version {version} was removed from disk; its lineage log entry follows",
              file=sys.stderr)
    _emit(args, data, "\n".join([*_describe_plan(args.model, plan), json.dumps(data, indent=2)]))
    return 0


def _describe_plan(model: str, plan: ServingPlan) -> list[str]:
    lines = [f"{model}: stable version {_versions(plan.stable)}"]
    if plan.canary is not None:
        lines.append(f"{model}: version {plan.canary} is a pending canary: {CANARY_NOTE}")
    if plan.rejected:
        lines.append(f"{model}: rejected (rolled back) {_versions(plan.rejected)}")
    return lines


def _verify(repo: Repository, args: argparse.Namespace) -> int:
    versions = [args.version] if args.version else repo.list_versions(args.model)
    results, failed = [], 0
    for version in versions:
        try:
            manifest = repo.verify(args.model, version)
            results.append({"version": int(version), "ok": True, "sha256": manifest.sha256})
        except IntegrityError as exc:
            failed += 1
            results.append({"version": int(version), "ok": False, "error": str(exc)})
    text = "\n".join(f"{args.model} {r['version']}: " + ("ok" if r["ok"] else f"FAILED: {r['error']}") for r in results)
    _emit(args, {"model": args.model, "results": results}, text or f"{args.model}: no versions")
    return 1 if failed else 0


def _rm(repo: Repository, args: argparse.Namespace) -> int:
    if args.keep_last is not None:
        if args.keep_last < 1:
            raise RepositoryError(f"--keep-last must be at least 1, got {args.keep_last}")
        removed = repo.retain(args.model, args.keep_last)
    else:
        repo.remove_version(args.model, args.version)
        removed = [int(args.version)]
    _emit(args, {"model": args.model, "removed": removed},
          f"removed {args.model} version(s) {', '.join(map(str, removed)) or '(none)'}")
    return 0


def _gc(repo: Repository, args: argparse.Namespace) -> int:
    if args.keep_versions < 0 or args.keep_jobs < 0:
        raise RepositoryError("--keep-versions and --keep-jobs must be 0 or more")
    repo.read_config(args.model)  # an unknown model is an error, not an empty report
    policy = RetentionPolicy(args.keep_versions, args.keep_jobs, args.stale_seconds)
    removed = gc_model(repo, args.model, policy, jobs_dir=Path(args.jobs_dir).absolute() if args.jobs_dir else None,
                       dry_run=args.dry_run)
    removed["requests"] = gc_requests(repo.root, args.stale_seconds, dry_run=args.dry_run)
    data = {"model": args.model, "dry_run": args.dry_run,
            "removed": {k: [p if isinstance(p, int) else str(p) for p in v] for k, v in removed.items()}}
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{args.model}: {verb} {kind}: {', '.join(map(str, items))}" for kind, items in removed.items() if items]
    _emit(args, data, "\n".join(lines) or f"{args.model}: nothing to remove")
    return 0


def _promote(repo: Repository, args: argparse.Namespace) -> int:
    _, plan = _state(repo, args.model)
    version = _chosen(repo, args, plan, "promote")
    manifest = repo.read_manifest(args.model, version)
    if manifest.status == REJECTED:
        raise RepositoryError(f"model {args.model!r} version {version} was rolled back; it cannot be promoted")
    if not is_pending(manifest):
        raise RepositoryError(f"model {args.model!r} version {version} is not a pending canary "
                              "(only a fine-tuned version nobody has decided on is)")
    report = decision_report(version, _stable(plan, version), PROMOTED, "promoted by hand (tunegate models promote)")
    if repo.update_manifest_if(args.model, version, is_pending, canary=report) is None:
        raise RepositoryError(f"model {args.model!r} version {version} was decided meanwhile (by a gateway's "
                              "canary window): see tunegate models show")
    return _decided(repo, args, version, "promoted")


def _rollback(repo: Repository, args: argparse.Namespace) -> int:
    _, plan = _state(repo, args.model)
    version = _chosen(repo, args, plan, "roll back")
    if version in plan.rejected:
        raise RepositoryError(f"model {args.model!r} version {version} is already rolled back")
    report = decision_report(version, _stable(plan, version), ROLLED_BACK,
                             "rolled back by hand (tunegate models rollback)")
    if repo.update_manifest_if(args.model, version, lambda m: m.status != REJECTED,
                               status=REJECTED, canary=report) is None:
        raise RepositoryError(f"model {args.model!r} version {version} is already rolled back")
    return _decided(repo, args, version, "rolled back")


def _chosen(repo: Repository, args: argparse.Namespace, plan: ServingPlan, verb: str) -> int:
    if args.version is not None:
        # read_manifest says what is wrong with a version that is not there or not valid
        return repo.read_manifest(args.model, args.version).version
    if plan.canary is None:
        raise RepositoryError(f"model {args.model!r} has no pending canary to {verb} "
                              f"(stable version {_versions(plan.stable)}); name one with --version")
    return plan.canary


def _stable(plan: ServingPlan, version: int) -> int | None:
    stable = [v for v in plan.stable if v != version]
    return stable[-1] if stable else None


def _decided(repo: Repository, args: argparse.Namespace, version: int, what: str) -> int:
    _, plan = _state(repo, args.model)
    data = {"model": args.model, "version": version, "decision": what.replace(" ", "_"), **_plan_dict(plan)}
    _emit(args, data, "\n".join([f"{what} {args.model} version {version}", *_describe_plan(args.model, plan)]))
    print(f"note: a running gateway applies it within one poll interval (poll mode); in explicit or none "
          f"mode, on POST /v2/repository/models/{args.model}/load or a restart", file=sys.stderr)
    return 0
