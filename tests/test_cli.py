import json

import pytest

import helpers

SUBCOMMANDS = ["fetch", "onnx", "torch", "verify", "evaluate", "report", "all"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command):
    completed = helpers.run_cli(command, "--help")
    assert completed.returncode == 0 and "--model" in completed.stdout and "--out" in completed.stdout


def test_unknown_command_is_usage_error():
    assert helpers.run_cli("frobnicate").returncode == 2


@pytest.mark.parametrize("command", ["onnx", "verify"])
def test_missing_model_exits_2_with_one_line(command, tmp_path):
    completed = helpers.run_cli(command, "--model", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "out"),
                                "--data", str(tmp_path))
    helpers.assert_one_line_error(completed, "missing.h5")


def test_missing_data_folder_exits_2(tiny_converted, tmp_path):
    """A real model.pt2, so that the data folder is the one thing wrong."""
    _, _, paths, _, _ = tiny_converted
    missing = tmp_path / "nowhere"
    completed = helpers.run_cli("evaluate", "--data", str(missing), "--torch", str(paths.pt2), "--out", str(tmp_path))
    helpers.assert_one_line_error(completed, "data folder", f"{missing.parent.name}/{missing.name} does not exist")


@pytest.mark.real_data
@pytest.mark.slow
def test_all_prints_summary(real_run):
    completed, paths, _ = real_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "verify     PASSED" in completed.stdout and "evaluate   PASSED" in completed.stdout
    times = next(line for line in completed.stdout.splitlines() if line.startswith("seconds "))
    assert all(f"{stage} " in times for stage in ("onnx", "torch", "native", "verify", "evaluate"))
    assert "AOT compile" in times or "AOT package from the compile cache" in times  # another test may have compiled it first
    report = paths.report_md.read_text()
    assert "| onnxruntime | keras |" in report and "Every layer within tolerance." in report
    assert "| 29 | dense | Dense |" in completed.stdout  # the per-layer table, printed
    assert paths.layers_png.is_file()


@pytest.mark.real_data
@pytest.mark.slow
def test_verify_explicit_artifacts_exit_1_on_broken_conversion(real_run, real_reference_copy):
    _, paths, data = real_run
    model = data / "models" / "pretrainedResnet.h5"
    broken = real_reference_copy / "broken.onnx"
    helpers.perturb_onnx_kernel(paths.onnx, broken, helpers.h5_tensor(model, "conv2d_7/kernel"))
    completed = helpers.run_cli("verify", "--model", str(model), "--onnx", str(broken), "--data", str(data),
                                "--out", str(real_reference_copy.parent))
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "verification failed" in completed.stderr.splitlines()[-1]
    saved = json.loads((real_reference_copy / "verify.json").read_text())
    assert not saved["passed"] and "torch" not in saved["backends"]
    assert saved["first_divergence"]["keras_layer"] == "conv2d_7"
    assert "First divergence: `conv2d_7`" in completed.stdout
    assert (real_reference_copy / "layers.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.real_data
@pytest.mark.slow
def test_other_model_onnx_torch_verify(real_paths, tmp_path):
    """ad01 (Dense autoencoder, input 640, no softmax): converts and verifies layer by layer; evaluate says why it does not apply."""
    model, out = helpers.REAL_AD01, tmp_path / "out"
    assert model.is_file(), f"{model} missing from the mirror"
    for command in ("onnx", "torch", "verify", "evaluate"):
        extra = ("--no-aot",) if command == "torch" else ()  # the package's own tests: test_aoti.py (CI's time)
        completed = helpers.run_cli(command, "--model", str(model), "--data", str(real_paths[1]), "--out", str(out), *extra)
        assert completed.returncode == 0, (command, completed.stderr[-2000:])
    assert "does not apply" in completed.stderr  # evaluate: the CIFAR-10 gate is for 32×32×3, 10 classes
    assert json.loads((out / "ad01" / "evaluate.json").read_text())["applies"] is False
    saved = json.loads((out / "ad01" / "verify.json").read_text())
    assert saved["passed"] and not saved["classifier"] and saved["test_images"] == 0
    assert "manual" in saved["not_applicable"] and saved["layers"]["manual_note"]
    compared = [row for row in saved["layers"]["layers"] if row["diffs"]]
    assert len(compared) == 28 and all(row["passed"] for row in compared)


@pytest.mark.real_data
def test_manifest_records_provenance(real_run):
    from pipeline.common.checksums import sha256_of

    _, paths, data = real_run
    manifest = json.loads((paths.dir / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha256_of(data / "models" / "pretrainedResnet.h5")
    assert manifest["data"]["sha256"] == sha256_of(data / "cifar-10-batches-bin" / "test_batch.bin")
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnx2torch", "torch", "python"} <= set(manifest["versions"])
    assert manifest["stages"]["onnx"]["opset"] == 15
    assert manifest["stages"]["onnx"]["artifacts"]["model.onnx"] == sha256_of(paths.onnx)
    assert manifest["stages"]["torch"]["artifacts"]["model_opt.pt2"] == sha256_of(paths.pt2_opt)
    assert manifest["stages"]["native"]["artifacts"]["model.safetensors"] == sha256_of(paths.native_weights)
    assert set(manifest["stages"]) == {"onnx", "torch", "native", "verify", "evaluate"}


@pytest.mark.real_data
def test_stage_refuses_artifacts_of_another_model(real_run, tmp_path):
    import shutil

    _, paths, data = real_run
    impostor = tmp_path / "pretrainedResnet.h5"  # same file name, different model: same artifacts folder
    shutil.copy(helpers.REAL_AD01, impostor)
    before = paths.pt2.read_bytes()
    completed = helpers.run_cli("torch", "--model", str(impostor), "--data", str(data), "--out", str(paths.dir.parent))
    helpers.assert_one_line_error(completed, "different model")
    assert paths.pt2.read_bytes() == before
