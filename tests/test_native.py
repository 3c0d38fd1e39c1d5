"""The native PyTorch model generated from the Keras file alone (`pipeline.native`): readable source,
safetensors weights with a map, equal to Keras (every pair, every layer, float64), loadable with torch
and safetensors only, and training like Keras (`verifier.training`) — each checker shown to fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import helpers
from pipeline.common.tolerances import ATOL_PROB, TRAIN_RTOL
from pipeline.keras_file.model import KerasModel
from pipeline.native import generate, load
from pipeline.native.layers.registry import WeightRule
from pipeline.stages import verify
from pipeline.verifier import training
from pipeline.verifier.backends import Artifacts

# Runs in a fresh interpreter: only torch, safetensors and numpy — the way a user loads the model.
CLEAN_PROCESS_SCRIPT = """
import importlib.util, sys
import numpy as np
import torch
from safetensors.torch import load_file

folder, test_batch = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("model", f"{folder}/model.py")
source = importlib.util.module_from_spec(spec)
spec.loader.exec_module(source)
model = source.Model()
model.load_state_dict(load_file(f"{folder}/model.safetensors"))
model.eval()
records = np.fromfile(test_batch, dtype=np.uint8).reshape(-1, 3073)
labels = records[:, 0].astype(np.int64)
images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32)  # NHWC, as Keras takes them
correct = 0
with torch.inference_mode():
    for start in range(0, len(images), 500):
        probs = model(torch.from_numpy(images[start:start + 500]))
        correct += int((probs.argmax(1).numpy() == labels[start:start + 500]).sum())
leaked = sorted(name for name in ("pipeline", "tensorflow", "keras", "onnx", "onnx2torch", "onnxruntime") if name in sys.modules)
print(correct, len(images), ",".join(leaked) or "-")
"""


@pytest.mark.slow
def test_resnet8_native_model_scores_like_keras_in_a_clean_process(real_run):
    _, paths, data = real_run
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(CLEAN_PROCESS_SCRIPT), str(paths.native_dir),
                                str(data / "cifar-10-batches-bin" / "test_batch.bin")], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
    correct, total, leaked = completed.stdout.split()
    evaluated = json.loads(paths.evaluate_json.read_text())
    assert (int(correct), int(total)) == (evaluated["correct"], evaluated["total"])  # the converted model's own score
    assert leaked == "-"


@pytest.mark.slow
def test_resnet8_native_model_verifies_in_every_pair_every_layer_and_float64(real_run):
    _, paths, _ = real_run
    summary = json.loads(paths.verify_json.read_text())
    assert summary["passed"] and "native" in summary["backends"]
    assert all(pair["passed"] for pair in summary["pairs"] if "native" in (pair["a"], pair["b"]))
    assert summary["float64_proof_native"]["passed"] and summary["float64_proof_native"]["max_abs_diff"] < 1e-9
    rows = summary["layers"]["layers"]
    assert all(any(d["backend"] == "native" and d["passed"] for d in row["diffs"]) for row in rows)
    parity = json.loads(paths.native_parity.read_text())
    assert parity["passed"] and parity["inputs"] == "CIFAR-10 test images"
    assert {row["kind"] for row in parity["rows"]} == {"gradient", "moving statistic", "after SGD", "after Adam"}


def test_generated_source_reads_like_hand_written_pytorch(real_paths):
    model, _ = real_paths
    source = generate.generate(KerasModel.open(model)).source
    assert "class Model(nn.Module):" in source and "import tensorflow" not in source and "pipeline" not in source
    assert "self.conv2d_3 = SameConv(nn.Conv2d(16, 32, (3, 3), stride=(2, 2)), same=True)  # conv2d_3 (Conv2D)" in source
    assert "self.batch_normalization = BatchNorm(16, eps=0.001, momentum=0.99)" in source
    assert "dense = torch.softmax(dense_logits, dim=1)  # dense (Dense)" in source


def test_weights_map_turns_every_keras_weight_into_its_state_dict_tensor(real_paths):
    keras = KerasModel.open(real_paths[0])
    native = generate.generate(keras)
    names = {f"{layer}/{weight}" for layer, weights in keras.weights.items() for weight in weights}
    assert set(native.weights_map) == names
    for name, entry in native.weights_map.items():
        layer, weight = name.split("/")
        rule = WeightRule.from_map(entry)
        np.testing.assert_array_equal(rule.apply(keras.weights[layer][weight]), native.state_dict[entry["key"]])
    assert native.weights_map["conv2d/kernel"] == {"key": "conv2d.conv.weight", "permute": [3, 2, 0, 1], "reshape": None}


def test_native_model_equals_the_hand_written_resnet8(real_paths, tmp_path):
    import torch

    from pipeline.stages import native
    from pipeline.verifier import resnet8

    keras = KerasModel.open(real_paths[0])
    result = native.run(real_paths[0], tmp_path, keras)
    model, _ = load.load(result.source, result.weights)
    manual = resnet8.from_keras(keras)[0]
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32))
    with torch.inference_mode():
        delta = (model(x) - torch.softmax(manual.logits(x), -1)).abs().max().item()
    assert delta <= ATOL_PROB


def _copy_with_source_edit(paths, tmp_path, old: str, new: str):
    """The real model's artifacts folder copied with `old` replaced by `new` in native/model.py."""
    target = tmp_path / paths.dir.name
    shutil.copytree(paths.dir, target)
    source = target / "native" / "model.py"
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    return target


def test_a_planted_native_fault_is_named_at_its_layer(family_models, tmp_path):
    """One BatchNorm epsilon changed in a generated model.py: verify fails there, in `native` only."""
    from pipeline.stages import native, to_torch

    model, out = family_models[("batchnorm", "keras3")]
    work = tmp_path / "batchnorm"
    shutil.copytree(out, work)
    result = native.run(model, work)
    source = result.source.read_text()
    (line,) = [line for line in source.splitlines() if "eps=1e-05" in line]  # the one BatchNorm built with epsilon 1e-5
    result.source.write_text(source.replace(line, line.replace("eps=1e-05", "eps=0.1")))
    planted = line.split("# ")[1].split(" (")[0]
    torch_result = to_torch.run(work / "model.onnx", work)
    artifacts = Artifacts(model, work / "model.onnx", torch_result.pt2, torch_result.pt2_opt, work / "model_f64.onnx", result.source)
    verified = verify.run(artifacts, None, work, progress=False, plots=False)
    divergence = verified.as_dict()["first_divergence"]
    assert (divergence["keras_layer"], divergence["backend"]) == (planted, "native")
    assert not verified.native_proof.passed and verified.proof.passed  # the ONNX path's proof is untouched
    assert all(pair.passed for pair in verified.pairs if "native" not in (pair.a, pair.b))


@pytest.mark.slow
@pytest.mark.parametrize("old, new, kind", [
    # torch's convention (momentum = weight of the batch) in place of Keras's (weight of the running value)
    ("momentum=0.99)", "momentum=0.01)", "moving statistic"),
    # torch's default epsilon in place of the file's 1e-3: outputs and gradients move
    ("eps=0.001", "eps=1e-05", "gradient"),
])
def test_training_parity_fails_on_planted_batchnorm_bugs(real_run, tmp_path, old, new, kind):
    _, paths, data = real_run
    target = _copy_with_source_edit(paths, tmp_path, old, new)
    model, source = load.load(target / "native" / "model.py", target / "native" / "model.safetensors")
    weights_map = json.loads((target / "native" / "weights_map.json").read_text())
    report = training.run(KerasModel.open(helpers.REAL_MODEL), model, source, weights_map, data, target / "native" / "parity.json",
                          stored=target / paths.keras_training_step.name)
    assert not report.passed and report.keras_step == training.STORED_STEP
    assert report.worst[kind] > 100 * TRAIN_RTOL
    with pytest.raises(Exception, match="training parity failed"):
        report.raise_if_failed()


@pytest.mark.slow
def test_the_native_stage_takes_keras_step_from_the_onnx_stage(real_run):
    """`all` starts no TensorFlow process for the native stage's parity: the onnx stage's took Keras's step."""
    _, paths, _ = real_run
    parity = json.loads(paths.native_parity.read_text())
    assert parity["passed"] and parity["keras_step"] == training.STORED_STEP


@pytest.mark.slow
def test_a_wrong_stored_keras_step_fails_parity_at_its_weight(real_run, tmp_path):
    """The stored step is what the native model is held to: one gradient of it 1% off (float32 and float64
    alike, as a different Keras step would be) fails there, and only there."""
    _, paths, data = real_run
    with np.load(paths.keras_training_step) as archive:
        stored = {key: archive[key] for key in archive.files}
    for key in ("grad/conv2d_4/kernel", "f64/grad/conv2d_4/kernel"):
        stored[key] = stored[key] * np.float32(1.01)
    np.savez(tmp_path / "step.npz", **stored)
    model, source = load.load(paths.native_source, paths.native_weights)
    weights_map = json.loads(paths.native_weights_map.read_text())
    report = training.run(KerasModel.open(helpers.REAL_MODEL), model, source, weights_map, data, tmp_path / "parity.json",
                          stored=tmp_path / "step.npz")
    assert report.keras_step == training.STORED_STEP
    assert {(row.weight, row.kind) for row in report.rows if not row.passed} == {("conv2d_4/kernel", "gradient")}


def test_a_stored_keras_step_is_used_only_for_its_own_model_and_batch(tmp_path):
    from types import SimpleNamespace

    from pipeline.common.keras_job import STEP_BATCH_KEYS, STEP_MODEL_KEY
    from pipeline.verifier.training_batch import stored_step

    inputs, labels, keras = np.arange(12, dtype=np.float32).reshape(2, 6), np.array([1, 0]), SimpleNamespace(sha256="a" * 64)
    batch = dict(zip(STEP_BATCH_KEYS, (inputs, labels, np.array("mean_squared_error")), strict=True))
    np.savez(tmp_path / "step.npz", **{"grad/d/kernel": np.ones(3), **batch, STEP_MODEL_KEY: np.array(keras.sha256)})
    path = tmp_path / "step.npz"
    assert set(stored_step(path, keras, inputs, labels, "mean_squared_error")) == {"grad/d/kernel"}
    assert stored_step(path, keras, inputs + 1, labels, "mean_squared_error") is None
    assert stored_step(path, keras, inputs, labels[::-1], "mean_squared_error") is None
    assert stored_step(path, keras, inputs, labels, "sparse_categorical_crossentropy") is None
    assert stored_step(path, SimpleNamespace(sha256="b" * 64), inputs, labels, "mean_squared_error") is None
    assert stored_step(tmp_path / "missing.npz", keras, inputs, labels, "mean_squared_error") is None


def test_torch_adam_epsilon_takes_keras_first_step():
    import torch

    g = torch.tensor([1e-6, -3e-6, 2e-5, 0.1], dtype=torch.float64)
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    w.grad = g.clone()
    torch.optim.Adam([w], lr=1e-3, eps=training.torch_adam_epsilon(1e-7)).step()
    m, v = 0.1 * g, 0.001 * g**2  # Keras: w −= lr·√(1−β₂)/(1−β₁) · m / (√v + ε)
    keras = -1e-3 * (0.001**0.5) / 0.1 * m / (v.sqrt() + 1e-7)
    torch.testing.assert_close(w.detach(), keras, rtol=1e-12, atol=0)


def test_unsupported_layer_is_named_in_one_line(tmp_path):
    from pipeline.common.errors import BadInput
    from pipeline.keras_file.graph import KerasLayer
    from pipeline.native import emitters
    from pipeline.native.emitters import Context, Tensor

    layer = KerasLayer("conv_lstm2d", "ConvLSTM2D", {}, ("in",))
    with pytest.raises(BadInput, match=r"layer conv_lstm2d: ConvLSTM2D has no native PyTorch equivalent.*ONNX path"):
        emitters.emit(layer, {}, [Tensor("x", 5)], Context("conv_lstm2d", False))


@pytest.mark.slow
def test_readme_fine_tune_example_runs_as_written(real_run, tmp_path):
    """The README's fine-tuning block, run word for word from a folder laid out as the repository after `make all`."""
    _, paths, data = real_run
    readme = (helpers.ROOT / "README.md").read_text()
    block = readme.split("<!-- fine-tune example -->\n```bash\n", 1)[1].split("\n```", 1)[0]
    (tmp_path / "artifacts" / "pretrainedResnet").mkdir(parents=True)
    (tmp_path / "artifacts" / "pretrainedResnet" / "native").symlink_to(paths.native_dir)
    (tmp_path / "data").symlink_to(data)
    completed = helpers.run_readme_block(block, tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    before, after = (float(line.rsplit(" ", 1)[1]) for line in completed.stdout.splitlines())
    assert before > 0.8 and after > 0.8, completed.stdout  # fine-tuning keeps a working model (figures: docs/native.md)


def test_names_from_the_file_cannot_become_code():
    """Layer and file names go into comments and the docstring of model.py, which is imported: a newline
    or quote in them must not end the comment."""
    hostile = 'conv\nimport os; os.system("touch /tmp/pwned")  """'
    assert generate._text(hostile) == "conv?import os? os.system(?touch /tmp/pwned?)  ???"
    assert generate._identifier(hostile, set()).isidentifier()


def test_a_failed_native_stage_leaves_no_native_model_and_records_why(no_native_model, tmp_path):
    """All or nothing: a model without a native model leaves no `native/` — not even an older one, which is not
    this model's — and `native_status.json` says why, for verify; failing the same way again leaves it as it was."""
    from pipeline.common.errors import BadInput
    from pipeline.common.paths import ModelPaths
    from pipeline.common.stage_status import StageStatus, not_built
    from pipeline.stages import native

    paths = ModelPaths.for_model(no_native_model, tmp_path)
    paths.native_dir.mkdir(parents=True)
    paths.native_source.write_text("# an older run's model\n")
    with pytest.raises(BadInput, match=f"{helpers.NO_NATIVE_LAYER} has no native PyTorch equivalent"):
        native.run(no_native_model, paths.dir)
    assert not paths.native_dir.exists() and sorted(p.name for p in paths.dir.iterdir()) == [paths.native_status.name]
    keras = KerasModel.open(no_native_model)
    assert f"layer gaussian_noise: {helpers.NO_NATIVE_LAYER} has no native" in not_built(paths.native_status, keras.sha256)
    assert not_built(paths.native_status, "another model's SHA-256") is None
    recorded = paths.native_status.stat().st_mtime_ns
    with pytest.raises(BadInput):
        native.run(no_native_model, paths.dir)
    assert paths.native_status.stat().st_mtime_ns == recorded and not StageStatus.read(paths.native_status).built


def test_a_killed_native_stage_leaves_no_native_model(tiny_model, tiny_data, tmp_path):
    """Killed while its files are written and Keras's training step runs (a fresh folder: no stored step, so the
    stage starts TensorFlow): no `native/model.py` that Make would take for done; the rerun sweeps the half."""
    import os
    import signal
    import time

    from pipeline.common.paths import ModelPaths

    paths = ModelPaths.for_model(tiny_model, tmp_path)
    command = [sys.executable, "-m", "pipeline", "native", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path)]
    process = subprocess.Popen(command, cwd=helpers.ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not helpers.worker_running(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the stage ended before it could be killed"
    staged = [p for p in paths.dir.iterdir() if p.name.startswith(".native.")]
    assert len(staged) == 1 and (staged[0] / "model.py").is_file()  # written, not yet in place
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not paths.native_dir.exists() and not paths.native_status.exists()
    rerun = helpers.run_cli("native", "--no-parity", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"removed {staged[0].name}" in rerun.stderr
    assert paths.native_source.is_file() and not [p for p in paths.dir.iterdir() if p.name.startswith(".native.")]


# "always" in `make zoo-test` (CI's time): "first" exercises the crash's naming and the retry, "always" the skip after it
@pytest.mark.parametrize("crash", ["first", pytest.param("always", marks=pytest.mark.zoo)], ids=["retried", "skipped"])
def test_a_crash_in_keras_training_step_is_a_finding_not_the_end(crash, tiny_model, tiny_data, tmp_path):
    """TensorFlow dying by a signal in Keras's step (simulated: `CRASH_TRAINING_FOR_TESTS`) is named by the signal
    and the step; the step is taken again the safe way, and where that crashes too, parity is skipped with the
    reason — the native model is written all the same."""
    from pipeline.common.keras_job import CRASH_TRAINING_FOR_TESTS
    from pipeline.common.paths import ModelPaths
    from pipeline.common.stage_status import StageStatus

    paths = ModelPaths.for_model(tiny_model, tmp_path)  # a fresh folder: no step stored by the onnx stage
    completed = helpers.run_cli("native", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path),
                                env={CRASH_TRAINING_FOR_TESTS: crash})
    assert completed.returncode == 0, completed.stderr[-2000:]
    parity = json.loads(paths.native_parity.read_text())
    crashed = "the TensorFlow process crashed (SIGSEGV) in the Keras training step for training parity on tiny.h5"
    if crash == "first":
        assert parity["passed"] and parity["batch"] == training.SAFE_BATCH and parity["keras_step"].startswith("taken again")
        assert "native: note: Keras's training step was taken again" in completed.stderr
    else:
        assert parity["passed"] is None and parity["skipped"].startswith(crashed) and "crashed again (SIGSEGV)" in parity["skipped"]
        (line,) = [line for line in completed.stderr.splitlines() if "training parity" in line]
        assert line == f"native: training parity skipped — {parity['skipped']}"
    assert "cuInit" not in completed.stderr and "Traceback" not in completed.stderr
    assert paths.native_source.is_file() and StageStatus.read(paths.native_status).built
