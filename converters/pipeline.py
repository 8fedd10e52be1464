"""One conversion, end to end: source -> ONNX -> checks -> parity -> staged version -> publish.

Everything is built in the repository's staging directory; any error before ``publish``
leaves no version behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_repo import MANIFEST_FILE, MODEL_FILE, SOURCE_DIR, Manifest, Repository

from . import check, onnx_files, parity, triton, variants
from .errors import SourceError
from .labels import attach_labels
from .progress import Progress
from .sources.base import Source
from .to_onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, convert_graph


@dataclass
class Options:
    opset: int | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    sample: dict[str, np.ndarray] | str | Path | None = None
    max_batch_size: int | None = None
    fp16: bool = False
    optimize: bool = False
    parent_version: int | None = None
    manifest_fields: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    # Files copied into the version beside model.onnx (relative path -> file), e.g. the
    # trainer's training curve; they are digested into the manifest like every other file.
    extra_files: dict[str, Path] = field(default_factory=dict)
    # Class names, one per score of the classifying output: written as its label_filename.
    class_names: list[str] | None = None


def _validate(options: Options) -> int:
    opset = DEFAULT_OPSET if options.opset is None else options.opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise SourceError(f"opset {opset} is not supported; expected {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if options.atol < 0 or options.rtol < 0:
        raise SourceError(f"tolerances must be >= 0, got atol={options.atol}, rtol={options.rtol}")
    if options.max_batch_size is not None and options.max_batch_size < 1:
        raise SourceError(f"max batch size must be >= 1, got {options.max_batch_size}")
    return opset


def parity_batches(source: Source, sample) -> tuple[list[dict[str, np.ndarray]], str]:
    if sample is None:
        return [parity.generate_inputs(source.inputs, b) for b in parity.BATCHES], "generated"
    if isinstance(sample, dict):
        return parity.sample_batches(sample, source.inputs), "sample"
    return parity.load_sample(sample, source.inputs), f"sample {Path(sample).name}"


def convert_and_publish(source: Source, repo: Repository, name: str, options: Options) -> Manifest:
    opset = _validate(options)
    steps = 6 + options.fp16 + options.optimize
    progress = Progress(steps, enabled=options.progress, desc=f"convert {name}")
    try:
        with progress.step("reference"):
            batches, inputs_from = parity_batches(source, options.sample)
            references = [source.run(feeds) for feeds in batches]
        with progress.step("tf2onnx"):
            graph_def, tf_inputs, tf_outputs, renames, tables = source.graph()
            # tf2onnx's own large_model mode calls np.product, gone in numpy 2; the ModelProto
            # is built in memory either way and onnx_files moves big tensors out when saving.
            model, _ = convert_graph(graph_def, tf_inputs, tf_outputs, renames, tables, opset=opset, name=name)
            check.check_ops(model)
        repo.model_dir(name)  # validates the name before any work lands on disk
        with repo.staging(name) as staged:
            with progress.step("check"):
                path = staged / MODEL_FILE
                external = onnx_files.save_model(model, path)
                check.check_model_file(path)
                session = check.open_session(path)
            with progress.step("parity"):
                report = parity.check_parity(source.run, session, batches, atol=options.atol, rtol=options.rtol,
                                             reference_outputs=references)
                report["inputs"] = inputs_from
            files = {"model": MODEL_FILE}
            if options.fp16:
                with progress.step("fp16"):
                    report["fp16"] = _fp16_variant(source, model, staged, batches, references)
                    files["fp16"] = variants.FP16_FILE
            if options.optimize:
                with progress.step("optimize"):
                    report["optimized"] = _optimized_variant(source, staged, batches, references, options)
                    files["optimized"] = variants.OPTIMIZED_FILE
            with progress.step("source"):
                source_entry = source.save(staged / SOURCE_DIR)
                _copy_extra_files(staged, options.extra_files)
            with progress.step("publish"):
                config = triton.config_for(model, name, options.max_batch_size)
                if options.class_names:
                    attach_labels(config, repo.model_dir(name), options.class_names)
                fields = dict(options.manifest_fields)
                extra = {"opset": opset, "files_by_role": files, "external_data": external,
                         "converter": {"timings_s": progress.timings, "origin": source.origin,
                                       "params": source.params}}
                for key, value in extra.items():
                    fields.setdefault(key, value)
                return repo.publish(name, staged, config=config, parent_version=options.parent_version,
                                    source=source_entry, parity=report, **fields)
    finally:
        progress.close()


def _copy_extra_files(staged: Path, extra_files: dict[str, Path]) -> None:
    import shutil

    reserved = {MODEL_FILE, SOURCE_DIR, MANIFEST_FILE}
    for rel, src in extra_files.items():
        target = (staged / rel).resolve()
        if Path(rel).is_absolute() or staged.resolve() not in target.parents or Path(rel).parts[0] in reserved:
            raise SourceError(f"extra file {rel!r} must be a relative path outside {sorted(reserved)}")
        if not Path(src).is_file():
            raise SourceError(f"extra file {src} does not exist")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def _fp16_variant(source: Source, model, staged: Path, batches, references) -> dict:
    path = staged / variants.FP16_FILE
    onnx_files.save_model(variants.to_fp16(model), path)
    check.check_model_file(path)
    session = check.open_session(path)
    return parity.check_parity(source.run, session, batches, atol=variants.FP16_ATOL, rtol=variants.FP16_RTOL,
                               label=variants.FP16_FILE, require_top1=True, reference_outputs=references)


def _optimized_variant(source: Source, staged: Path, batches, references, options: Options) -> dict:
    path = staged / variants.OPTIMIZED_FILE
    variants.optimize(staged / MODEL_FILE, path)
    session = check.open_session(path)
    return parity.check_parity(source.run, session, batches, atol=options.atol, rtol=options.rtol,
                               label=variants.OPTIMIZED_FILE, reference_outputs=references)
