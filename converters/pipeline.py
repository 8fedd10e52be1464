"""One conversion, end to end: source -> ONNX -> checks -> parity -> staged version -> publish.

Everything is built in the repository's staging directory; any error before ``publish``
leaves no version behind."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_repo import MANIFEST_FILE, MODEL_FILE, SOURCE_DIR, Manifest, Repository

from . import check, custom_ops, onnx_files, parity, triton, variants
from .errors import SourceError, stage
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
        batches = [parity.generate_inputs(source.inputs, b) for b in parity.BATCHES]
        return batches + parity.edge_batches(source.inputs), "generated"
    if isinstance(sample, dict):
        batches = parity.sample_batches(sample, source.inputs)
        if not any(spec.dtype.kind == "O" for spec in source.inputs):
            return batches, "sample"
        # A text model's in-memory sample (a fine-tune's held-out feedback) seldom holds the
        # cases that broke converted graphs (no token at all, non-ASCII case, OOV words):
        # the generated text batches are checked as well.
        generated = [parity.generate_inputs(source.inputs, b) for b in parity.BATCHES]
        return batches + generated + parity.edge_batches(source.inputs), "sample and generated text"
    return parity.load_sample(sample, source.inputs), f"sample {Path(sample).name}"


def convert_and_publish(source: Source, repo: Repository, name: str, options: Options) -> Manifest:
    opset = _validate(options)
    steps = 7 + options.fp16 + options.optimize
    progress = Progress(steps, enabled=options.progress, desc=f"convert {name}")

    @contextlib.contextmanager
    def step(label: str, where: str):
        with stage(where), progress.step(label):
            yield

    try:
        with step("reference", "parity"):
            batches, inputs_from = parity_batches(source, options.sample)
            references = [source.run(feeds) for feeds in batches]
        with step("trace", "trace"):
            graph_def, tf_inputs, tf_outputs, renames, tables = source.graph()
        with step("tf2onnx", "convert"):
            # tf2onnx's own large_model mode calls np.product, gone in numpy 2; the ModelProto
            # is built in memory either way and onnx_files moves big tensors out when saving.
            model, _ = convert_graph(graph_def, tf_inputs, tf_outputs, renames, tables, opset=opset, name=name)
            check.check_ops(model)
            extensions = custom_ops.needs_extensions(model)
        work = _Work(source, name, options, opset, progress, model, extensions, batches, inputs_from, references)
        with stage("publish"):
            repo.model_dir(name)  # validates the name before any work lands on disk
            with repo.staging(name) as staged:
                return _stage_version(work, repo, staged, step)
    finally:
        progress.close()


@dataclass
class _Work:
    """What the steps before staging produced, for the steps that fill the staged version."""

    source: Source
    name: str
    options: Options
    opset: int
    progress: Progress
    model: Any  # the ONNX ModelProto
    extensions: bool  # it needs onnxruntime-extensions' custom ops
    batches: list[dict[str, np.ndarray]]
    inputs_from: str
    references: list[dict[str, np.ndarray]]


def _stage_version(work: _Work, repo: Repository, staged: Path, step) -> Manifest:
    source, name, options, model, extensions = work.source, work.name, work.options, work.model, work.extensions
    batches, references = work.batches, work.references
    with step("check", "convert"):
        path = staged / MODEL_FILE
        external = onnx_files.save_model(model, path)
        check.check_model_file(path)
        session = check.open_session(path, extensions)
    with step("parity", "parity"):
        report = parity.check_parity(source.run, session, batches, atol=options.atol, rtol=options.rtol,
                                     reference_outputs=references)
        report["inputs"] = work.inputs_from
    files = {"model": MODEL_FILE}
    if options.fp16:
        with step("fp16", "convert"):
            report["fp16"] = _fp16_variant(source, model, staged, batches, references, extensions)
            files["fp16"] = variants.FP16_FILE
    if options.optimize:
        with step("optimize", "convert"):
            report["optimized"] = _optimized_variant(source, staged, batches, references, options, extensions)
            files["optimized"] = variants.OPTIMIZED_FILE
    with step("source", "publish"):
        source_entry = source.save(staged / SOURCE_DIR)
        _copy_extra_files(staged, options.extra_files)
    with step("publish", "publish"):
        config = triton.config_for(model, name, options.max_batch_size)
        custom_ops.mark_config(config, extensions)
        if extensions and repo.has_model(name):
            # An operator's config is kept on publish; the one thing a text version needs in it
            # is added before the version appears (a numeric version 1 had no reason to say it).
            existing = repo.read_config(name)
            if custom_ops.CONFIG_KEY not in existing.parameters:
                custom_ops.mark_config(existing, True)
                repo.write_config(name, existing)
        if options.class_names:
            attach_labels(config, repo.model_dir(name), options.class_names)
        fields = dict(options.manifest_fields)
        extra = {"opset": work.opset, "files_by_role": files, "external_data": external,
                 "converter": {"timings_s": work.progress.timings, "origin": source.origin,
                               "params": source.params}}
        if extensions:
            extra["custom_ops"] = [custom_ops.EXTENSIONS]
        for key, value in extra.items():
            fields.setdefault(key, value)
        return repo.publish(name, staged, config=config, parent_version=options.parent_version,
                            source=source_entry, parity=report, **fields)


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


def _fp16_variant(source: Source, model, staged: Path, batches, references, extensions: bool) -> dict:
    path = staged / variants.FP16_FILE
    onnx_files.save_model(variants.to_fp16(model), path)
    check.check_model_file(path)
    session = check.open_session(path, extensions)
    return parity.check_parity(source.run, session, batches, atol=variants.FP16_ATOL, rtol=variants.FP16_RTOL,
                               label=variants.FP16_FILE, require_top1=True, reference_outputs=references)


def _optimized_variant(source: Source, staged: Path, batches, references, options: Options,
                       extensions: bool) -> dict:
    path = staged / variants.OPTIMIZED_FILE
    variants.optimize(staged / MODEL_FILE, path, extensions)
    session = check.open_session(path, extensions)
    return parity.check_parity(source.run, session, batches, atol=options.atol, rtol=options.rtol,
                               label=variants.OPTIMIZED_FILE, reference_outputs=references)
