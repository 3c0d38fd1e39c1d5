"""`keras2torch` (= `python -m pipeline`) `{convert,fetch,onnx,torch,native,verify,evaluate,bench,aot-options,report,zoo,fuzz,
layers,all}`: parse, call the stage, print, map errors to exit codes. Nothing else lives here. `convert` runs every stage
a model needs, in order (`cmd_convert`); the others are one stage each, as the Makefile's targets call them.

Exit codes: 0 success, 1 a check or gate failed, 2 bad input or usage. Errors are one line on stderr;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from pipeline.common import paths as P
from pipeline.common.errors import CheckFailed, PipelineError
from pipeline.common.keras_job import DEFAULT_OPSET
from pipeline.common.messages import one_line


# The labelled test sets `convert --evaluate` gates accuracy on (the evaluate stage's).
EVALUATE_SETS = ("cifar10",)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _model_paths(args) -> P.ModelPaths:
    return P.ModelPaths.for_model(args.model, args.out)


def _data(data: Path) -> Path | None:
    """The data folder the stages use (`cifar.resolve`): None, with a note, when the default one holds no test set."""
    from pipeline.data import cifar

    data, note = cifar.resolve(data)
    if note:
        _say(f"note: {note}")
    return data


def _layer_names(model: Path) -> list[str]:
    """The Keras model's layer names, to name layers in errors; none if the model file is not readable."""
    from pipeline.common.errors import BadInput
    from pipeline.keras_file.model import KerasModel

    try:
        return KerasModel.open(model, allow_unsafe_code=True).layer_names  # the config is only read, never run
    except BadInput:
        return []


def cmd_fetch(args) -> int:
    from pipeline.data import fetch

    result = fetch.run(args.data, args.mirror, allow_download=not args.offline)
    for name, source in result.sources.items():
        _say(f"fetch: {name:40s} {source}")
    return 0


def cmd_onnx(args) -> int:
    from pipeline.keras_file.model import KerasModel
    from pipeline.stages import to_onnx

    started = time.perf_counter()
    from pipeline.data import checkset

    given = checkset.parse_range(args.input_range) if args.input_range else None
    options = to_onnx.OnnxOptions(opset=args.opset, allow_unsafe_code=args.allow_unsafe_code, inputs=args.inputs, input_range=given)
    keras = KerasModel.open(args.model, args.allow_unsafe_code)  # the model first, then its --inputs, then the data
    to_onnx.check_inputs(keras, options)
    result = to_onnx.run(keras, args.out, _data(args.data), options)
    if result.float64_note:
        _say(f"note: no float64 proof for this model: {result.float64_note}")
    if keras.legacy_under_new_name:
        _say(f"note: {keras.name} is a legacy HDF5 file under a .keras name; read as the .h5 it is")
    if keras.fixed_batch:
        _say(f"note: the model was saved with {keras.fixed_batch}; converted and checked with any batch size, each call "
             "from zero state (carry a recurrent state between calls in your own loop)")
    if keras.open_dimensions:
        _say(f"note: the model leaves input dimension(s) {', '.join(map(str, keras.open_dimensions))} open; checked and converted "
             f"at length {checkset.OPEN_DIMENSION_LENGTH}: the ONNX and torch models take inputs of shape {result.input_shape}"
             + (f"; the native model, which takes any length, is checked at {' and '.join(map(str, result.other_lengths))} too"
                if result.other_lengths else ""))
    _say(f"onnx: wrote {result.onnx} and {result.reference.name} (loaded with {result.keras_version}, "
         f"{f'inputs {result.inputs}' if result.inputs else f'input {result.input_shape}'}); "
         f"onnxruntime vs Keras max |Δ| {result.validation.max_abs_diff:.2e} on {result.validation.images} inputs "
         f"[{time.perf_counter() - started:.1f} s]")
    return 0


def cmd_torch(args) -> int:
    from pipeline.common import manifest
    from pipeline.stages import to_torch

    started = time.perf_counter()
    if args.onnx is None:
        manifest.require_same_model(_model_paths(args).dir, args.model)
    result = to_torch.run(args.onnx or _model_paths(args).onnx, _model_paths(args).dir, _layer_names(args.model),
                          aot=not getattr(args, "no_aot", False))
    opt = result.optimizations
    _say(f"torch: wrote {result.pt2} and {result.fx_code.name} ({result.reshapes_made_static} reshape(s) made static); "
         f"model.pt2 vs onnxruntime max |Δ| {result.validation.max_abs_diff:.2e}")
    _say(f"torch: wrote {result.pt2_opt.name} ({opt.batchnorms_folded} BatchNorm(s) folded, {opt.native_ops} wrapper(s) made native, "
         f"{opt.linears_folded} Linear(s)); vs onnxruntime max |Δ| {result.validation_opt.max_abs_diff:.2e}")
    if result.validation_aoti is not None:
        models = "any-batch model only: batch-1 model " + result.aoti_batch1 if result.aoti_batch1 else "any-batch and batch-1 models"
        compiled = "from the compile cache, compiled" if result.aoti_cached else "compiled"
        _say(f"torch: wrote {result.pt2_aoti.name} (AOTInductor, {models}; {compiled} in {result.aoti_seconds:.1f} s); "
             f"vs onnxruntime max |Δ| {result.validation_aoti.max_abs_diff:.2e}")
    _say(f"torch: done [{time.perf_counter() - started:.1f} s]")
    return 0


def cmd_native(args) -> int:
    from pipeline.keras_file.model import KerasModel
    from pipeline.stages import native

    started = time.perf_counter()
    # An unreadable model or data folder fails even with --keep-going: only what `native.run` records is let go.
    keras, data = KerasModel.open(args.model, args.allow_unsafe_code), _data(args.data)
    try:
        result = native.run(args.model, _model_paths(args).dir, keras, parity=not getattr(args, "no_parity", False), data=data)
    except PipelineError as exc:
        # --keep-going lets go of a model the native stage cannot write, not of a native model that was
        # written and disagrees with Keras (CheckFailed): that is a finding, exit 1
        if not getattr(args, "keep_going", False) or isinstance(exc, CheckFailed):
            raise
        _say(one_line(f"native: not built — {exc}"))  # recorded in native_status.json: verify says so and goes on
        return 0
    checked = (f"vs Keras max |Δ| {result.validation.max_abs_diff:.2e} on {result.validation.images} inputs" if result.validation
               else "not checked against Keras yet (run `make onnx`, then verify)")
    _say(f"native: wrote {result.source}, {result.weights.name} ({result.parameters:,} values) and {result.weights_map.name}; "
         f"{checked} [{time.perf_counter() - started:.1f} s]")
    if result.parity is not None and result.parity.skipped:
        _say(f"native: training parity skipped — {result.parity.skipped}")  # our own words, one line: not cut
    elif result.parity is not None:
        worst = ", ".join(f"{kind} {value:.1e}" for kind, value in result.parity.worst.items())
        _say(f"native: training parity with Keras ({result.parity.batch} {result.parity.inputs}, {result.parity.loss}): "
             f"worst relative error {worst} (bound {result.parity.rtol:g}); wrote {_model_paths(args).native_parity.name}")
        if result.parity.keras_step.startswith("taken again"):
            _say(f"native: note: Keras's training step was {result.parity.keras_step}")
    for note in result.notes[:6]:
        _say(f"native: note: {note}")
    if len(result.notes) > 6:
        _say(f"native: and {len(result.notes) - 6} more notes in {result.source.name}'s docstring")
    if result.not_carried:
        _say(f"native: not carried by the weights (add them back to train with them): {', '.join(result.not_carried[:6])}"
             + (f" and {len(result.not_carried) - 6} more" if len(result.not_carried) > 6 else ""))
    return 0


def cmd_verify(args) -> int:
    from pipeline.common import manifest, stage_status
    from pipeline.keras_file.model import KerasModel
    from pipeline.stages import report, verify
    from pipeline.verifier import keras_outputs
    from pipeline.verifier.backends import Artifacts

    keras = KerasModel.open(args.model, args.allow_unsafe_code)  # before anything else: the model is the first thing to be wrong
    paths = _model_paths(args)
    scratch = contextlib.ExitStack()  # holds the scratch folder of the model's own conversion, where one is made (below)
    if args.onnx is not None or args.torch is not None:
        # Someone else's conversion: only what is named — and, where the onnx stage ran for this very model,
        # its float64 conversion (the proof) and its own model.onnx, in which layers are placed (`verifier.placement`).
        # Without one, the model is converted here (a TensorFlow process, into a scratch folder): a broken file
        # cannot show where it breaks when searched in itself.
        ours = manifest.load(paths.dir).get("model", {}).get("sha256") == keras.sha256
        reference = paths.onnx if ours and paths.onnx.is_file() else None
        if args.onnx is not None and reference is None:
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory()))
            try:
                reference = keras_outputs.own_conversion(keras, folder, args.allow_unsafe_code)
            except PipelineError as exc:  # their file is verified all the same; its layers are then searched in itself
                _say(one_line(f"verify: the model's own conversion failed ({exc}); layers are placed in {args.onnx} itself"))
        artifacts = Artifacts(args.model, args.onnx, args.torch, onnx_f64=paths.onnx_f64 if ours and paths.onnx_f64.is_file() else None,
                              onnx_reference=reference)
    else:
        manifest.require_same_model(paths.dir, args.model)
        # The native stage's record wins over a native/ folder: where it says this model has none, any there is not this model's.
        why_not = stage_status.not_built(paths.native_status, keras.sha256)
        native_built = paths.native_source.is_file() and stage_status.built(paths.native_status, keras.sha256)
        artifacts = Artifacts(args.model, paths.onnx, paths.pt2, paths.pt2_opt if paths.pt2_opt.is_file() else None,
                              paths.onnx_f64 if paths.onnx_f64.is_file() else None,
                              paths.native_source if native_built else None,
                              paths.pt2_aoti if paths.pt2_aoti.is_file() else None,
                              not_built={"native": why_not} if why_not is not None else {})
    data = _data(args.data)
    started = time.perf_counter()
    with scratch:
        result = verify.run(artifacts, data, paths.dir, allow_unsafe_code=args.allow_unsafe_code, keras=keras)
    summary = result.as_dict()
    if getattr(args, "quiet", False):  # `convert`: its summary at the end, the tables in report.md
        _say(f"verify: wrote {paths.verify_json} [{time.perf_counter() - started:.1f} s]")
        result.raise_if_failed()
        return 0
    print(report.verify_table(summary))
    if summary["layers"]:
        print()
        print(report.layers_table(summary["layers"]))
    _say(f"verify: wrote {paths.verify_json} [{time.perf_counter() - started:.1f} s]")
    result.raise_if_failed()
    return 0


def cmd_evaluate(args) -> int:
    from pipeline.common import manifest
    from pipeline.stages import evaluate, report

    paths = _model_paths(args)
    started = time.perf_counter()
    if args.torch is None:
        manifest.require_same_model(paths.dir, args.model)
    onnx_path = args.onnx or (paths.onnx if paths.onnx.is_file() else None)
    options = evaluate.EvaluateOptions(device=args.device, allow_tf32=args.allow_tf32)
    result = evaluate.run(args.torch or paths.pt2, args.data, paths.dir, onnx=onnx_path, options=options, model=args.model)
    if isinstance(result, evaluate.NotEvaluated):
        _say(f"evaluate: does not apply — {result.reason}; nothing to gate")
        return 0
    print(report.evaluate_table(result.as_dict()))
    _say(f"evaluate: wrote {paths.evaluate_json} and {paths.confusion_png.name} [{time.perf_counter() - started:.1f} s]")
    result.raise_if_failed()
    return 0


def cmd_bench(args) -> int:
    from pipeline.stages import bench

    options = bench.BenchOptions(
        batch_sizes=tuple(int(s) for s in args.batch_sizes.split(",")), images=args.images, repeats=args.repeats,
        threads=args.threads, device=args.device, allow_tf32=args.allow_tf32, with_keras=not args.no_keras,
    )
    started = time.perf_counter()
    result = bench.run(args.model, _model_paths(args).dir, args.data, options)
    print(bench.table(result))
    _say(f"bench: wrote {_model_paths(args).bench_json} and {_model_paths(args).bench_png.name} [{time.perf_counter() - started:.1f} s]")
    return 0


def cmd_aot_options(args) -> int:
    from pipeline.stages import aot_options

    started = time.perf_counter()
    names = tuple(n.strip() for n in args.variants.split(";") if n.strip()) if args.variants else ()
    paths = _model_paths(args)
    aot_options.run(paths, args.data, names)
    print(paths.aot_options_md.read_text(), end="")
    _say(f"aot-options: wrote {paths.aot_options_md} [{time.perf_counter() - started:.1f} s]")
    return 0


def cmd_report(args) -> int:
    from pipeline.stages import report

    report.write_report(_model_paths(args).dir, args.model)
    print(report.summary(_model_paths(args).dir))
    return 0


def cmd_zoo(args) -> int:
    from pipeline.stages import zoo

    known = (*zoo.ARCHITECTURES, zoo.TRAINED, zoo.SEQUENCES)
    names = tuple(args.models.split(",")) if args.models else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        from pipeline.common.errors import BadInput

        raise BadInput(f"--models {','.join(unknown)}: not in the zoo; choose from {','.join(known)}")
    rows = zoo.run(args.out, names, tuple(args.formats.split(",")))
    print(zoo.table(rows))
    _say(f"zoo: wrote {Path(args.out) / 'zoo' / 'summary.md'}")
    return 0 if all(row.verdict.startswith("verified") for row in rows) else 1


def cmd_layers(args) -> int:
    from pipeline.stages import layers

    path = layers.run()
    print(path.read_text(), end="")
    _say(f"layers: wrote {path}")
    return 0


def cmd_fuzz(args) -> int:
    from pipeline.stages import fuzz

    given = {key: value for key, value in (("cli_cases", args.cli_cases), ("seed", args.seed)) if value is not None}
    summary = fuzz.run(args.out, args.model, _data(args.data), args.sample, **given)
    _say(f"fuzz: {len(summary.outcomes)} cases over {len(summary.bases)} base models, {len(summary.findings)} finding(s) "
         f"[{summary.seconds / 60:.1f} min]; wrote {Path(args.out) / 'fuzz' / 'summary.md'}")
    for finding in summary.findings[:10]:
        _say(f"fuzz: {finding.depth} {finding.case}: {finding.result} — {finding.line[:150]}")
    return 0 if not summary.findings else 1


def cmd_convert(args) -> int:
    """The user's own model through every stage it needs — onnx, torch, native (unless --no-native), verify, and
    evaluate where --evaluate names a labelled test set — one numbered line as each starts, then the summary.
    A model with no native model is verified all the same (`native --keep-going`)."""
    from pipeline.stages import report

    from pipeline.common.errors import BadInput
    from pipeline.keras_file.model import KerasModel

    if not args.model.is_file():  # said before any step starts, with what to give instead (not `make fetch`)
        raise BadInput(f"{args.model} does not exist; give the path to your Keras model (.keras or .h5)")
    KerasModel.open(args.model, args.allow_unsafe_code)  # an unreadable file is refused on one line, before any step
    if args.evaluate:  # a test set that is not there: said now, not after every other stage
        from pipeline.data import cifar

        cifar.locate(args.data)
    paths = _model_paths(args)
    for earlier in (paths.verify_json, paths.evaluate_json):  # an earlier run's verdict must not stand for this one's
        earlier.unlink(missing_ok=True)
    args.onnx = args.torch = None
    args.keep_going, args.quiet = True, True  # the tables are in report.md; here, one summary
    steps = [("onnx", cmd_onnx), ("torch", cmd_torch), *([] if args.no_native else [("native", cmd_native)]), ("verify", cmd_verify),
             *([("evaluate", cmd_evaluate)] if args.evaluate else [])]
    started = time.perf_counter()
    for number, (name, step) in enumerate(steps, 1):
        _say(f"[{number}/{len(steps)}] {name}")
        try:
            step(args)
        except CheckFailed:
            if name not in ("verify", "evaluate"):
                raise
            report.write_report(paths.dir, args.model)  # a verdict, not an error: its summary is what the user needs
            print(report.summary(paths.dir))
            raise
    report.write_report(paths.dir, args.model)
    print(report.summary(paths.dir))
    _say(f"keras2torch: {report.verdict_line(paths.dir)} [{time.perf_counter() - started:.0f} s]")
    return 0


def cmd_floor(args) -> int:
    from pipeline.common.errors import BadInput
    from pipeline.stages import floor

    missing = [str(model) for model in args.models if not model.is_file()]
    if missing:
        raise BadInput(f"{', '.join(missing)} does not exist; give the paths of your Keras models (.keras or .h5)")
    rows = floor.run(args.models, args.out, args.opset, _data(args.data), progress=_say)
    print(floor.table(rows))
    _say(f"floor: wrote {args.out / 'floor.md'} and floor.json")
    return 1 if any(row.broken for row in rows) else 0


def cmd_all(args) -> int:
    args.keep_going = True  # verify what was built: a model without a native model is still verified (`native --keep-going`)
    for step in (cmd_fetch, cmd_onnx, cmd_torch, cmd_native, cmd_verify, cmd_evaluate, cmd_report):
        step(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)  # every command on one model: `convert` takes the model as its argument
    shared.add_argument("--data", type=Path, default=P.DEFAULT_DATA,
                        help="folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ (default: %(default)s)")
    shared.add_argument("--out", type=Path, default=P.DEFAULT_OUT, help="artifacts root; files go to OUT/<model stem>/ (default: %(default)s)")
    shared.add_argument("--debug", action="store_true", help="show tracebacks")
    shared.add_argument("--allow-unsafe-code", action="store_true",
                        help="let Keras load Lambda layers, which runs Python code from the model file (only for files you trust)")
    common = argparse.ArgumentParser(add_help=False, parents=[shared])
    common.add_argument("--model", type=Path, default=P.DEFAULT_MODEL, help="Keras .h5 model (default: %(default)s)")
    mirror = argparse.ArgumentParser(add_help=False)
    mirror.add_argument("--mirror", type=Path, default=P.DEFAULT_MIRROR,
                        help="offline mirror folder laid out like ../shared, used before any download (default: %(default)s)")
    mirror.add_argument("--offline", action="store_true", help="never download; fail if a file is not in the mirror")
    onnx_opt = argparse.ArgumentParser(add_help=False)
    onnx_opt.add_argument("--onnx", type=Path, help="an ONNX file to use instead of OUT/<stem>/model.onnx")
    torch_opt = argparse.ArgumentParser(add_help=False)
    torch_opt.add_argument("--torch", type=Path, help="a .pt2 file to use instead of OUT/<stem>/model.pt2")
    opset = argparse.ArgumentParser(add_help=False)
    opset.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s; 14–16 are tested by both converters)")
    opset.add_argument("--inputs", type=Path,
                       help="a .npy of your own sample inputs, shape (N, *input shape): compared in every later check too")
    opset.add_argument("--input-range", metavar="LO,HI",
                       help="draw the random check inputs from [LO, HI] (default: the range the model's Rescaling or "
                            "Normalization states, else [0,1], [-1,1] and [0,255])")

    parser = argparse.ArgumentParser(prog="keras2torch", description="Keras .h5/.keras → ONNX → PyTorch, proven equal. "
                                     "`keras2torch convert MODEL` does it all; the other commands are its stages.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{convert,fetch,onnx,torch,native,verify,evaluate,bench,aot-options,report,zoo,fuzz,floor,layers,all}")
    device_opt = argparse.ArgumentParser(add_help=False)
    device_opt.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where torch runs (default: %(default)s)")
    device_opt.add_argument("--allow-tf32", action="store_true",
                            help="on CUDA, let fp32 convolutions run in TF32 (faster; flipped 3–4 ResNet8 predictions)")
    convert = sub.add_parser("convert", parents=[shared, opset, device_opt], help="your model through every stage: onnx, torch, native, "
                             "verify (and evaluate with --evaluate); exit 0 equal, 1 not equal, 2 refused")
    convert.add_argument("model", type=Path, help="your Keras model, .keras or .h5")
    convert.add_argument("--no-native", action="store_true", help="skip the native PyTorch model (native/model.py)")
    convert.add_argument("--evaluate", choices=EVALUATE_SETS, help="also gate model.pt2's accuracy on this labelled test set")
    convert.set_defaults(func=cmd_convert)
    sub.add_parser("fetch", parents=[common, mirror], help="put the model and test set under --data, SHA-256 checked").set_defaults(func=cmd_fetch)
    sub.add_parser("onnx", parents=[common, opset], help="Keras .h5 → model.onnx + Keras reference outputs").set_defaults(func=cmd_onnx)
    torch_parser = sub.add_parser("torch", parents=[common, onnx_opt],
                                  help="model.onnx → model.pt2 + model_fx.py, model_opt.pt2, model_aoti.pt2 (AOTInductor)")
    torch_parser.add_argument("--no-aot", action="store_true", help="skip the AOTInductor package (a compile of seconds to minutes)")
    torch_parser.set_defaults(func=cmd_torch)
    native_parser = sub.add_parser("native", parents=[common], help="Keras file alone → native/model.py, model.safetensors, "
                                                                    "weights_map.json (a PyTorch model to keep training)")
    native_parser.add_argument("--no-parity", action="store_true", help="skip the training step against Keras (no TensorFlow process)")
    native_parser.add_argument("--keep-going", action="store_true",
                               help="where no native model can be made, say why on one line, record it for verify "
                                    "(native_status.json) and exit 0 (`make verify` runs it so)")
    native_parser.set_defaults(func=cmd_native)
    sub.add_parser("verify", parents=[common, onnx_opt, torch_opt],
                   help="compare Keras, onnxruntime, the FX graph, model.pt2, the native model and the hand-written model"
                   ).set_defaults(func=cmd_verify)
    sub.add_parser("evaluate", parents=[common, onnx_opt, torch_opt, device_opt],
                   help="CIFAR-10 accuracy of model.pt2, gated").set_defaults(func=cmd_evaluate)
    from pipeline.stages.bench import BenchOptions

    sizes = ",".join(map(str, BenchOptions.batch_sizes))
    bench_parser = sub.add_parser("bench", parents=[common, device_opt],
                                  help=f"images/s of every backend at batch sizes {sizes} (bench.json, bench.png)")
    bench_parser.add_argument("--batch-sizes", default=sizes, help="comma-separated (default: %(default)s)")
    bench_parser.add_argument("--images", type=int, default=BenchOptions.images, help="test images per pass (default: %(default)s)")
    bench_parser.add_argument("--repeats", type=int, default=BenchOptions.repeats, help="passes per figure, best kept (default: %(default)s)")
    bench_parser.add_argument("--threads", type=int, default=BenchOptions.threads, help="threads for every backend (default: %(default)s)")
    bench_parser.add_argument("--no-keras", action="store_true", help="leave out Keras (no TensorFlow process)")
    bench_parser.set_defaults(func=cmd_bench)
    aot_parser = sub.add_parser("aot-options", parents=[common],
                                help="each AOTInductor setting compiled, checked and timed against onnxruntime (aot_options.md)")
    aot_parser.add_argument("--variants", help="semicolon-separated variant names (default: all; see aot_options.VARIANTS)")
    aot_parser.set_defaults(func=cmd_aot_options)
    sub.add_parser("report", parents=[common], help="rewrite report.md and print the summary").set_defaults(func=cmd_report)
    zoo_parser = sub.add_parser("zoo", parents=[common], help="Keras Applications with calibrated random weights through onnx, torch, "
                                                               "verify: OUT/zoo/summary.md")
    zoo_parser.add_argument("--models", help="comma-separated architectures, `trained` for the trained members, "
                                             "`sequences` for the sequence models (default: all of the zoo)")
    zoo_parser.add_argument("--formats", default="keras,h5", help="comma-separated: keras, h5 (default: %(default)s)")
    zoo_parser.set_defaults(func=cmd_zoo)
    fuzz_parser = sub.add_parser("fuzz", parents=[common], help="damaged and hostile copies of --model and of base models of other kinds: "
                                 "each must be taken or refused in one line; writes OUT/fuzz/summary.md")
    fuzz_parser.add_argument("--sample", type=int, help="cases of each base model, drawn with --seed (default: every case)")
    fuzz_parser.add_argument("--cli-cases", type=int, help="cases run through the whole onnx stage (default: stages.fuzz's, 40)")
    fuzz_parser.add_argument("--seed", type=int, help="the draw's seed (default: stages.fuzz.FUZZ_SEED)")
    fuzz_parser.set_defaults(func=cmd_fuzz)
    floor_parser = sub.add_parser("floor", help="each model through the bare tools (tf2onnx + onnx2torch, no checks) and through "
                                  "`convert`: where the bare tools are equal to Keras the pipeline must pass (floor.md; exit 1 where not)")
    floor_parser.add_argument("models", type=Path, nargs="+", help="Keras models, .keras or .h5")
    floor_parser.add_argument("--out", type=Path, default=P.DEFAULT_OUT / "floor", help="where floor.md goes (default: %(default)s)")
    floor_parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="the bare tf2onnx's opset (default: %(default)s)")
    floor_parser.add_argument("--data", type=Path, default=P.DEFAULT_DATA, help="the CIFAR-10 folder `convert` is given (default: %(default)s)")
    floor_parser.add_argument("--debug", action="store_true", help="show tracebacks")
    floor_parser.set_defaults(func=cmd_floor)
    sub.add_parser("layers", help="write docs/layers.md, the supported-layers table, from the code and the tests; print it"
                   ).set_defaults(func=cmd_layers, debug=False)
    sub.add_parser("all", parents=[common, mirror, opset, onnx_opt, torch_opt, device_opt],
                   help="fetch, onnx, torch, native, verify, evaluate, then the summary").set_defaults(func=cmd_all)
    return parser


def run(argv: list[str]) -> int:
    """Parse `argv` and run its command; a `PipelineError` is raised, not printed (`main` prints it; `api` raises it)."""
    args = build_parser().parse_args(argv)
    return _dispatch(args)


def _dispatch(args) -> int:
    if args.command not in ("fetch", "zoo", "fuzz", "layers", "floor"):  # every other stage writes into OUT/<stem>/
        from pipeline.common import atomic

        folder = _model_paths(args).dir
        atomic.require_writable(folder)
        for path in atomic.sweep(folder):
            _say(f"note: removed {path.name}, left by an interrupted run")
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PipelineError as exc:
        if args.debug:
            raise
        _say(one_line(f"error: {exc}"))
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted; artifacts already on disk are intact")
        return 130
