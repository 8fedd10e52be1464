"""``tunegate finetune``: fine-tune the serving version with Horovod and publish the next one.

Exit status: 0 a new version was published; 2 bad input (unknown model, missing data, labels
that do not fit the model); 3 not promoted (the candidate failed the gate, nothing was
published); 1 the job failed (a rank died, conversion failed), nothing was published.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import EXIT_OK
from .options import add_job_arguments, validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    add_job_arguments(parser)
    launch = parser.add_argument_group("launching")
    launch.add_argument("--np", type=int, help="number of ranks (default: 1 on hosts of up to 2 cores, else one per core, "
                        "or the --hosts slots; trainer.distributed.default_ranks)")
    launch.add_argument("--hosts", metavar="HOST:SLOTS,...", help="hosts to run on (default localhost)")
    launch.add_argument("--min-np", type=int, help="elastic: fewest ranks to keep going with")
    launch.add_argument("--max-np", type=int, help="elastic: most ranks to grow to")
    launch.add_argument("--host-discovery-script", help="elastic: script printing host:slots lines "
                                                        "(default: the --hosts list)")
    launch.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout "
                                                            "(training progress goes to stderr)")
    from .submit import add_arguments as add_submit_arguments

    add_submit_arguments(parser.add_argument_group("on Kubernetes"))
    from .spark_launch import add_arguments as add_spark_arguments

    add_spark_arguments(parser.add_argument_group("on Spark"))
    _show_defaults(parser)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append "(default: X)" to every option with a default that its help does not already
    describe (ArgumentDefaultsHelpFormatter would print "(default: None)" for defaults given
    in words, and nothing at all for options without help text)."""
    for action in parser._actions:
        text = action.help or ""
        # `is`, not `in`: a default of 0 (--seed) equals False but is worth showing.
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "default" in text \
                or not action.option_strings:
            continue
        action.help = f"{text} (default: %(default)s)" if text else "default: %(default)s"


def run(args: argparse.Namespace) -> int:
    from .errors import NotPromoted
    from .preflight import model_input_names, model_input_shape
    from .source import resolve_base

    validate(args)
    if args.submit:  # the repository is on the cluster, not here: the pods check it
        from .submit import submit

        return submit(args)
    absolute_paths(args)
    base = resolve_base(args.repo, args.model, args.version)
    model_input = model_input_shape(base.repo, args.model)
    echo = sys.stderr if args.json else sys.stdout
    # Checked before any rank starts: a mistake there is one line, not a job outcome.
    if args.launcher == "spark":
        from .spark_launch import launch_spark, preflight

        conf = preflight(args, model_input)
        start = lambda: launch_spark(args, model_input=model_input, conf=conf, echo=echo)  # noqa: E731
    else:
        from .launcher import launch

        topo = _preflight_horovodrun(args, model_input, model_input_names(base.repo, args.model))
        start = lambda: launch(args, topo, echo=echo)  # noqa: E731
    try:
        result = start()
    except Exception as exc:
        if args.json and hasattr(exc, "details"):
            status = "not_promoted" if isinstance(exc, NotPromoted) else "error"
            print(json.dumps({"status": status, "error": type(exc).__name__, "message": str(exc),
                              **exc.details}, indent=2, default=str))
        raise
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        summary = result["summary"]
        print(f"{args.model}: version {result['version']} published (parent {summary['parent_version']}, "
              f"{summary['world_size']} ranks, {summary['mode']} mode); {summary['gate']['message']}")
    return EXIT_OK


def absolute_paths(args: argparse.Namespace) -> None:
    """Resolve every path the user typed where they typed it: the ranks run elsewhere
    (horovodrun's working directory, Spark's executors)."""
    args.repo = os.path.abspath(args.repo)
    for name in ("checkpoint_dir", "report_dir", "host_discovery_script"):
        if getattr(args, name, None):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    args.data = [_absolute_data(spec) for spec in args.data]
    if args.val_data:
        args.val_data = [_absolute_data(spec) for spec in args.val_data]


def _absolute_data(spec: str) -> str:
    from .data import FEEDBACK_SCHEME

    if spec.startswith(FEEDBACK_SCHEME):
        where = spec[len(FEEDBACK_SCHEME):]
        return FEEDBACK_SCHEME + os.path.abspath(where) if where else spec
    # What is not there stays as typed: a Spark table's name, or a mistake its error names.
    return os.path.abspath(spec) if os.path.exists(spec) else spec


def _preflight_horovodrun(args: argparse.Namespace, model_input, inputs: list[str] | None):
    from .launcher import check_data_paths, topology
    from .preflight import check_data

    check_data_paths(list(args.data) + list(args.val_data or []))
    # Before horovodrun: a rank would find the same mistakes only after TensorFlow and
    # Horovod start, and report them inside horovodrun's traceback.
    check_data([*args.data, *(args.val_data or [])], features=args.features, label=args.label,
               model=args.model, model_input=model_input, inputs=inputs)
    return topology(args.np, args.hosts, elastic=args.elastic, min_np=args.min_np, max_np=args.max_np,
                    discovery_script=args.host_discovery_script)
