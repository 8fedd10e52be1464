"""The ``tunegate`` command.

Each package owns its subcommand in ``<package>/cli.py`` (``add_arguments(parser)`` and
``run(args) -> int``). Only the chosen subcommand's module is imported, so ``tunegate
models`` never loads TensorFlow and ``tunegate serve`` never loads Horovod.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "convert": ("converters.cli", "convert a Keras/TensorFlow model to ONNX and publish it"),
    "models": ("model_repo.cli", "list, show, verify and remove models and versions"),
    "serve": ("gateway.cli", "serve the repository over HTTP (KServe v2)"),
    "finetune": ("trainer.cli", "fine-tune a served model with Horovod and publish the next version"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # our error hierarchies carry a status; anything else is a bug
        if not hasattr(exc, "status"):
            raise
        print(f"tunegate {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
