"""``tunegate convert SRC --repo DIR --name NAME``: convert, check parity, publish.

Exit status: 0 published; 2 bad arguments or source file (checked before TensorFlow
starts); 3 unknown custom object; 4 an op the converter cannot handle (or a preprocessing
layer it refuses, named, with what to do); 5 invalid ONNX; 6 parity failure; 1 other
failure. Nothing is published on any failure. A failure is one line on stderr naming the
stage first (load, trace, convert, parity, publish), then the cause.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

from .errors import SourceError, as_conversion_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("src", help="a .keras or .h5 Keras file, a SavedModel directory, or a frozen GraphDef .pb")
    parser.add_argument("--repo", required=True,
                        help="model repository directory (created if missing and its parent exists)")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument("--format", choices=("keras", "saved_model", "graphdef"),
                        help="source format (default: detected from the file)")
    parser.add_argument("--signature", help="SavedModel signature to convert (default: serving_default)")
    parser.add_argument("--inputs", help="GraphDef input nodes, comma-separated (default: its Placeholders)")
    parser.add_argument("--outputs", help="GraphDef output nodes, comma-separated (default: inferred if unambiguous)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17; 13..18)")
    parser.add_argument("--sample", "--parity-data", dest="sample", metavar="FILE",
                        help="parity inputs instead of generated ones: an .npz with one array per input name, "
                             "or for a model with one text input a .txt with one text per line")
    parser.add_argument("--reference-data", metavar="FILE.npz",
                        help="training or typical inputs (an array per input name, rows first): their summary "
                             "goes into the manifest as input_summary, the gateway's drift reference")
    parser.add_argument("--class-names", metavar="FILE|a,b,c",
                        help="class names (a file, one per line, or comma-separated) for the output with one "
                             "score per class: written as its label_filename, for the classification extension")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity absolute tolerance (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="parity relative tolerance (default 1e-3)")
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx (float16, fp32 I/O)")
    parser.add_argument("--optimize", action="store_true",
                        help="also write model_optimized.onnx (onnxruntime offline optimisation)")
    parser.add_argument("--max-batch-size", type=int, help="config.pbtxt max_batch_size (default 64)")
    parser.add_argument("--parent-version", type=int, help="record this version as the parent in the manifest")
    parser.add_argument("--unsafe", action="store_true",
                        help="load Keras files with safe_mode off (runs code stored in the file)")
    parser.add_argument("--custom-objects", action="append", metavar="MODULE:ATTR", default=[],
                        help="a custom layer or object the Keras file needs (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: model, version, path, parity")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    from model_repo import Repository

    from .pipeline import Options

    options = Options(opset=args.opset, atol=args.atol, rtol=args.rtol, sample=args.sample,
                      max_batch_size=args.max_batch_size, fp16=args.fp16, optimize=args.optimize,
                      parent_version=args.parent_version, progress=not args.quiet)
    # Everything that needs no TensorFlow is checked first: a typo costs a second, not the
    # several seconds of importing TensorFlow and converting.
    check_arguments(args, options)
    if args.class_names is not None:
        from .labels import parse_class_names

        options.class_names = parse_class_names(args.class_names)
    if args.reference_data is not None:
        from .reference import reference_summary

        options.manifest_fields["input_summary"] = reference_summary(args.reference_data)
    repo = Repository(open_repository(Path(args.repo)))

    # Keras traces LSTM/GRU to CudnnRNNV3 when it sees a GPU and tf2onnx cannot convert that;
    # conversion is a CPU job. Must be set before TensorFlow is imported.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from .publish import publish_file
    from .sources.keras import load_custom_objects

    try:
        manifest = publish_file(args.src, repo, args.name, format=args.format, signature=args.signature,
                                inputs=_names(args.inputs), outputs=_names(args.outputs), safe_mode=not args.unsafe,
                                custom_objects=load_custom_objects(args.custom_objects), options=options)
    except Exception as exc:
        raise as_conversion_error(exc) from exc
    path = repo.version_dir(args.name, manifest.version)
    if args.json:
        print(json.dumps({"model": manifest.model, "version": manifest.version, "path": str(path),
                          "parity": manifest.parity}))
    else:
        print(f"published {manifest.model} version {manifest.version} at {path} "
              f"(parity max |Δ| {manifest.parity['max_abs']:.2g}, max rel {manifest.parity['max_rel']:.2g})")
    return 0


def check_arguments(args: argparse.Namespace, options) -> None:
    """Raise :class:`SourceError` (exit 2) for any argument that is wrong on its face."""
    from model_repo import RepositoryError
    from model_repo.names import check_model_name, parse_version

    from .pipeline import _validate
    from .sources.detect import detect_format

    try:
        check_model_name(args.name)
    except RepositoryError as exc:
        raise SourceError(f"--name: {exc.message}") from None
    if args.parent_version is not None:
        try:
            parse_version(args.parent_version)
        except RepositoryError as exc:
            raise SourceError(f"--parent-version: {exc.message}") from None
    _validate(options)  # opset range, tolerances, max batch size: the pipeline's own rules
    src = Path(args.src)
    if args.format is None:
        detect_format(src)
    elif not src.exists():
        raise SourceError(f"{src}: no such file or directory")
    elif (args.format == "saved_model") != src.is_dir():
        kind = "a SavedModel directory" if args.format == "saved_model" else "a file"
        raise SourceError(f"{src}: --format {args.format} expects {kind}")
    for spec in args.custom_objects:
        if not all(spec.partition(":")[::2]):
            raise SourceError(f"--custom-objects {spec!r}: expected MODULE:ATTR, e.g. mypkg.layers:MyLayer")
    if args.sample is not None:
        sample = Path(args.sample)
        if not sample.is_file():
            raise SourceError(f"--sample {sample}: no such file")
        if sample.suffix != ".txt" and not zipfile.is_zipfile(sample):
            raise SourceError(f"--sample {sample}: not an .npz file (expected np.savez(path, INPUT=array, ...)) "
                              "nor a .txt file of texts")


def open_repository(root: Path) -> Path:
    """The repository's root; a missing one is created only when its parent exists, so a
    mistyped ``--repo`` fails instead of growing a tree of directories somewhere."""
    root = root.absolute()
    if root.is_dir():
        return root
    if root.exists():
        raise SourceError(f"--repo {root}: exists but is not a directory")
    if not root.parent.is_dir():
        raise SourceError(f"--repo {root}: no such directory, nor its parent {root.parent}; "
                          "check the path, or create the parent first")
    try:
        root.mkdir()
    except OSError as exc:
        raise SourceError(f"--repo {root}: cannot create it: {exc.strerror}") from None
    print(f"tunegate convert: created a new model repository at {root}", file=sys.stderr)
    return root
