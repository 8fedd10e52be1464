"""The ``tunegate`` command.

Each package owns its subcommand in ``<package>/cli.py`` (``add_arguments(parser)`` and
``run(args) -> int``). Only the chosen subcommand's module is imported, so ``tunegate
models`` never loads TensorFlow and ``tunegate serve`` never loads Horovod.

Exit status: 0 done; 1 the operation failed (an error of ours, told in one line per
problem on stderr); 2 bad usage or settings; 130 interrupted. A subcommand's errors
carry their own ``exit_code`` (e.g. ``tunegate finetune``'s 3: trained but not promoted).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "convert": ("converters.cli", "convert a Keras/TensorFlow model to ONNX and publish it"),
    "models": ("model_repo.cli", "list, show, verify, remove, promote and roll back models and versions"),
    "serve": ("gateway.cli", "serve the repository over HTTP and gRPC (KServe v2 / Triton)"),
    "finetune": ("trainer.cli", "fine-tune a served model with Horovod and publish the next version"),
}


def build_parser(chosen: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    """The ``tunegate`` parser with the ``chosen`` subcommand's arguments (``every``: all of
    them, as the documentation's CLI reference renders it). Nothing runs: it only imports the
    subcommands' ``cli`` modules, none of which loads TensorFlow or Horovod at import."""
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__.splitlines()[1])
    parser.add_argument("--version", action="version", version=f"tunegate {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if every or name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def _every_parser() -> argparse.ArgumentParser:
    """Every subcommand's arguments (for sphinx-argparse, which takes a function of no arguments)."""
    return build_parser(every=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top-level parser: show the usage of the command used
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `tunegate models list | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush fails no more
        return 141
    except Exception as exc:  # our error hierarchies carry a status; anything else is a bug
        if not hasattr(exc, "status"):
            raise
        for line in (str(exc) or type(exc).__name__).splitlines():
            print(f"tunegate {args.command}: error: {line}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)sub-parser that parsed the chosen command, e.g. ``tunegate models show``."""
    while True:
        chosen = None
        for action in parser._actions:  # argparse keeps no public list of its sub-parsers
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
        if chosen is None:
            return parser
        parser = chosen


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tunegate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from gateway import __version__
        return __version__


if __name__ == "__main__":
    sys.exit(main())
