"""``tunegate models list|show|verify|rm``."""

from __future__ import annotations

import argparse
import json

from .config import config_to_dict
from .errors import IntegrityError, RepositoryError
from .policy import describe
from .repository import Repository


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, help="model repository directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="models and their versions")
    show = actions.add_parser("show", help="a model's config and a version's manifest")
    show.add_argument("model")
    show.add_argument("--version", help="default: the newest available version")
    verify = actions.add_parser("verify", help="check the sha256 of every file of a version")
    verify.add_argument("model")
    verify.add_argument("--version", help="default: every version")
    rm = actions.add_parser("rm", help="remove a version, or keep only the newest N")
    rm.add_argument("model")
    which = rm.add_mutually_exclusive_group(required=True)
    which.add_argument("--version")
    which.add_argument("--keep-last", type=int, metavar="N")


def run(args: argparse.Namespace) -> int:
    repo = Repository(args.repo)
    if not repo.root.is_dir():
        raise RepositoryError(f"repository {repo.root} does not exist (expected a directory)")
    return {"list": _list, "show": _show, "verify": _verify, "rm": _rm}[args.action](repo, args)


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _list(repo: Repository, args: argparse.Namespace) -> int:
    rows = []
    for model in repo.list_models():
        config = repo.read_config(model)
        rows.append({
            "model": model,
            "versions": repo.list_versions(model),
            "available": repo.available_versions(model),
            "version_policy": describe(config),
            "max_batch_size": config.max_batch_size,
        })
    lines = [f"{'MODEL':<24} {'VERSIONS':<16} {'SERVING':<8} POLICY"]
    for r in rows:
        serving = str(r["available"][-1]) if r["available"] else "-"
        lines.append(f"{r['model']:<24} {','.join(map(str, r['versions'])) or '-':<16} {serving:<8} {r['version_policy']}")
    if not rows:
        lines.append(f"(no models in {repo.root})")
    _emit(args, rows, "\n".join(lines))
    return 0


def _show(repo: Repository, args: argparse.Namespace) -> int:
    config = config_to_dict(repo.read_config(args.model))
    version = repo.resolve(args.model, args.version) if args.version or repo.available_versions(args.model) else None
    manifest = repo.read_manifest(args.model, version).to_dict() if version else None
    data = {"model": args.model, "versions": repo.list_versions(args.model), "config": config, "manifest": manifest}
    _emit(args, data, json.dumps(data, indent=2))
    return 0


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
