"""The OpenVINO backend: parity with the PyTorch path and the golden file, precision choice, the
export cache (reused, rebuilt on a new checkpoint, refused and rebuilt when corrupt), and clear
errors when OpenVINO cannot run.

The pipeline is exported once per session into ``random_ckpt_dir/openvino`` (the default cache
folder, which the worker tests share); cache behaviour is tested on copies of that entry and on
a tiny network, so CI pays one export.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import handler
import openvino_backend
from cpvton_infer import PIPELINE_GRAPH, CPVTONPlusModel
from openvino_backend import export_cache
from openvino_backend.runtime import BackendUnavailable
from tests.helpers.shared_data import PHOTOS, ROOT, needs_shared
from tests.model import test_golden
from training.metrics import psnr
from vton_core.weights import GMM_FILE, TOM_FILE
from worker.settings import Settings

ov = pytest.importorskip("openvino")
NO_BF16 = "this CPU has no native bf16 (OpenVINO's OPTIMIZATION_CAPABILITIES lists no BF16)"
HAS_BF16 = "BF16" in openvino_backend.cpu_capabilities()
#: The bf16 graph against the fp32 graph (issue 16): PSNR of the try-on, and the TPS grid,
#: which stays in fp32 (its error comes from θ only).
BF16_MIN_PSNR_DB = 35.0
BF16_MAX_GRID_ERROR = 5e-3
INPUTS = ("agnostic_gmm", "agnostic_tom", "cloth", "cloth_mask")


@pytest.fixture(scope="session")
def ov_model(random_ckpt_dir):
    """The OpenVINO fp32 model of the random-weight checkpoints (exported once per session)."""
    return CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="openvino")


@pytest.fixture(scope="session")
def ov_entry(ov_model) -> Path:
    return ov_model.networks.model_path.parent


def golden_inputs(golden) -> list[torch.Tensor]:
    return [torch.from_numpy(golden[k]) for k in INPUTS]


# -- parity ---------------------------------------------------------------------------------------
@needs_shared
def test_fp32_graph_passes_the_golden_parity_tests(golden, ov_model):
    """The golden parity tests themselves, unchanged (same tolerances), on the OpenVINO model."""
    assert ov_model.backend == "openvino" and ov_model.precision == "fp32"
    test_golden.test_networks_match(golden, ov_model)
    test_golden.test_try_on_from_files_matches_the_reference_pixels(golden, ov_model)
    test_golden.test_batch_equals_single(golden, ov_model)


@needs_shared
def test_fp32_graph_equals_the_torch_path(golden, model, ov_model):
    ref = model.forward_tensors(*golden_inputs(golden))
    out = ov_model.forward_tensors(*golden_inputs(golden))
    assert set(out) == set(ref)
    for key in ref:
        assert out[key].dtype == torch.float32 and out[key].shape == ref[key].shape, key
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-3, msg=lambda m, k=key: f"{k}: {m}")


@needs_shared
@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_bf16_graph_stays_close_to_fp32(golden, random_ckpt_dir, ov_model, capsys):
    bf16 = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="auto", backend="openvino")
    assert bf16.precision == "bf16"          # auto picks bf16 where the CPU has it
    ref = ov_model.forward_tensors(*golden_inputs(golden))
    out = bf16.forward_tensors(*golden_inputs(golden))
    value = float(psnr((out["tryon"] + 1) / 2, (ref["tryon"] + 1) / 2).min())
    grid_error = float((out["grid"] - ref["grid"]).abs().max())
    theta_error = float((out["theta"] - ref["theta"]).abs().max())
    with capsys.disabled():
        print(f"\n[OpenVINO bf16 vs fp32] try-on PSNR (worst pair) {value:.1f} dB, "
              f"grid error {grid_error:.1e}, theta error {theta_error:.1e}")
    assert value >= BF16_MIN_PSNR_DB
    assert grid_error <= BF16_MAX_GRID_ERROR


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(openvino_backend.runtime, "cpu_capabilities", lambda core=None: ("FP32",))
    assert openvino_backend.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="native bf16"):
        openvino_backend.resolve_precision("bf16")
    with pytest.raises(ValueError, match="fp16"):
        openvino_backend.resolve_precision("fp16")


def test_openvino_model_serves_a_try_on(ov_model):
    from worker import sample_images
    person = sample_images.synthetic_person()
    cloth = sample_images.garment()
    result = ov_model.try_on(person.image, cloth, parse=person.parse, pose=person.pose,
                             person_mask=person.mask, cloth_mask=sample_images.garment_mask(cloth))
    assert result.image.size == person.image.size and result.warped_grid.size == (192, 256)
    assert ov_model.gmm is None and ov_model.tom is None    # no torch weights kept


# -- the export cache -----------------------------------------------------------------------------
def copy_entry(entry: Path, cache_dir: Path) -> Path:
    shutil.copytree(entry, cache_dir / entry.name)
    return cache_dir / entry.name


@pytest.fixture
def counting_export(monkeypatch, ov_entry):
    """Replace the pipeline export by a copy of the session's export, counting the calls."""
    calls = []

    def fake_export(gmm, tom, xml_path):
        calls.append(xml_path)
        for file in export_cache.MODEL_FILES:
            shutil.copy(ov_entry / file, Path(xml_path).parent / file)

    import openvino_backend.pipeline_graph as pipeline_graph
    monkeypatch.setattr(pipeline_graph, "export_pipeline", fake_export)
    return calls


def test_a_valid_entry_is_reused(random_ckpt_dir, ov_entry, tmp_path, counting_export):
    copy_entry(ov_entry, tmp_path)
    m = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="openvino",
                        openvino_cache_dir=tmp_path)
    assert counting_export == [] and m.networks.model_path.parent == tmp_path / ov_entry.name


@pytest.mark.parametrize("damage", ["truncated bin", "edited xml", "no manifest", "bad manifest",
                                    "other identity"])
def test_a_corrupt_entry_is_refused_and_rebuilt(random_ckpt_dir, ov_entry, tmp_path,
                                                counting_export, damage, caplog):
    entry = copy_entry(ov_entry, tmp_path)
    if damage == "truncated bin":
        data = (entry / "model.bin").read_bytes()
        (entry / "model.bin").write_bytes(data[: len(data) // 2])
    elif damage == "edited xml":
        (entry / "model.xml").write_text((entry / "model.xml").read_text() + "\n")
    elif damage == "no manifest":
        (entry / export_cache.MANIFEST).unlink()
    elif damage == "bad manifest":
        (entry / export_cache.MANIFEST).write_text("{not json")
    else:
        text = (entry / export_cache.MANIFEST).read_text()
        (entry / export_cache.MANIFEST).write_text(text.replace('"format": "', '"format": "0'))
    m = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="openvino",
                        openvino_cache_dir=tmp_path)
    assert len(counting_export) == 1 and "unusable" in caplog.text
    assert export_cache.entry_problem(entry, _identity(m)) is None      # rebuilt in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]   # no temporary left


def _identity(m: CPVTONPlusModel) -> dict:
    return export_cache.full_identity(PIPELINE_GRAPH, {
        "gmm_sha256": m.weights.gmm_sha256, "tom_sha256": m.weights.tom_sha256,
        "config": repr(m.cfg)})


def test_a_changed_checkpoint_gets_a_new_export(random_ckpt_dir, ov_entry, tmp_path,
                                                counting_export):
    ckpt = tmp_path / "ckpt"
    for f in (GMM_FILE, TOM_FILE):
        (ckpt / f).parent.mkdir(parents=True)
        shutil.copy(random_ckpt_dir / f, ckpt / f)
    state = torch.load(ckpt / TOM_FILE, weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    torch.save(state, ckpt / TOM_FILE)
    copy_entry(ov_entry, ckpt / "openvino")             # the old pair's entry is there
    m = CPVTONPlusModel(ckpt, device="cpu", precision="fp32", backend="openvino")
    assert len(counting_export) == 1
    assert m.networks.model_path.parent != ckpt / "openvino" / ov_entry.name


def test_random_weights_are_keyed_by_their_state_dict_hash(tmp_path, counting_export):
    m = CPVTONPlusModel(tmp_path / "no-checkpoints", device="cpu", precision="fp32",
                        backend="openvino", allow_random_weights=True,
                        openvino_cache_dir=tmp_path / "cache")
    assert m.weights.random and len(counting_export) == 1
    assert export_cache.entry_problem(m.networks.model_path.parent, _identity(m)) is None


def test_generic_cache_for_any_module(tmp_path):
    """The hook other networks (e.g. the person parser) use: export once, reuse, rebuild."""
    calls = []

    def export(xml_path: Path) -> None:
        calls.append(xml_path)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
        model = ov.convert_model(net, example_input=torch.zeros(1, 3, 8, 8))
        ov.save_model(model, str(xml_path), compress_to_fp16=False)

    first = export_cache.cached_model(tmp_path, "tiny", {"weights_sha256": "a" * 64}, export)
    again = export_cache.cached_model(tmp_path, "tiny", {"weights_sha256": "a" * 64}, export)
    other = export_cache.cached_model(tmp_path, "tiny", {"weights_sha256": "b" * 64}, export)
    assert first == again and other != first and len(calls) == 2
    assert first.parent.stat().st_mode & 0o777 == export_cache.ENTRY_MODE   # others may read it
    graph = openvino_backend.CompiledGraph(first, "fp32")
    out = graph({graph.compiled.inputs[0].get_any_name(): np.ones((2, 3, 8, 8), np.float32)})
    assert next(iter(out.values())).shape == (2, 4, 8, 8)


def test_unwritable_cache_exports_for_the_process_and_says_so(tmp_path, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(export_cache.tempfile, "mkdtemp",
                        lambda prefix="", dir=None, _real=export_cache.tempfile.mkdtemp:
                        refuse() if dir is not None else _real(prefix=prefix))
    path = export_cache.cached_model(tmp_path / "ro", "tiny", {"k": "v"},
                                     lambda xml: (Path(xml).write_text("x"),
                                                  Path(xml).with_suffix(".bin").write_text("y")))
    assert path.is_file() and not str(path).startswith(str(tmp_path))
    assert "not writable" in caplog.text and "OPENVINO_CACHE_DIR" in caplog.text


# -- choosing the backend -------------------------------------------------------------------------
@pytest.fixture
def no_openvino(monkeypatch):
    """Make ``import openvino`` fail, as on an installation without it."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_openvino_requested_but_missing_is_a_clear_error(random_ckpt_dir, no_openvino):
    with pytest.raises(BackendUnavailable, match="openvino package is not installed"):
        CPVTONPlusModel(random_ckpt_dir, device="cpu", backend="openvino")
    with pytest.raises(RuntimeError, match="BACKEND=openvino"):
        handler.check_backend(Settings(checkpoint_dir=random_ckpt_dir, backend="openvino"))


def test_auto_without_openvino_runs_torch_and_says_so(random_ckpt_dir, no_openvino, caplog):
    m = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="auto")
    assert m.backend == "torch" and "OpenVINO unavailable" in m.backend_reason
    handler.check_backend(Settings(checkpoint_dir=random_ckpt_dir, device="cpu"))
    assert "BACKEND=auto" in caplog.text and "PyTorch" in caplog.text


def test_auto_picks_openvino_on_cpu_and_backend_torch_still_works(random_ckpt_dir, ov_model):
    auto = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32")
    assert auto.backend == "openvino" and auto.backend_reason == "auto: OpenVINO on CPU"
    torch_model = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="torch")
    assert torch_model.backend == "torch" and torch_model.gmm is not None
    with pytest.raises(ValueError, match="backend"):
        CPVTONPlusModel(random_ckpt_dir, device="cpu", backend="onnx")


def test_settings_read_backend_and_cache_dir():
    s = Settings.from_env({"BACKEND": "OpenVINO", "OPENVINO_CACHE_DIR": "/var/cache/ov"})
    assert s.backend == "openvino" and s.openvino_cache_dir == Path("/var/cache/ov")
    assert Settings.from_env({}).backend == "auto" and Settings.from_env({}).openvino_cache_dir is None
    with pytest.raises(ValueError, match="BACKEND"):
        Settings.from_env({"BACKEND": "onnx"})


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_worker_serves_on_either_backend(random_ckpt_dir, ov_model, backend):
    worker = handler.start_worker(Settings(checkpoint_dir=random_ckpt_dir, device="cpu",
                                           precision="fp32", backend=backend, warmup=True))
    assert worker.model.backend == backend


def test_the_image_build_command_fills_the_cache(random_ckpt_dir, ov_entry, tmp_path, capsys):
    """``python -m openvino_backend CKPT`` (run by the Dockerfile when weights are baked)."""
    from openvino_backend.__main__ import main
    assert main([str(random_ckpt_dir)]) == 0                  # the session's entry: a cache hit
    assert capsys.readouterr().out.strip() == str(ov_entry)
    assert any(p.name.startswith("person_parser-") for p in ov_entry.parent.iterdir())
    assert main([str(tmp_path / "no-checkpoints")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


# -- a warm cache serves without torch ------------------------------------------------------------
SERVE_WITHOUT_TORCH = r"""
import base64, json, sys
import handler
from worker.settings import Settings
worker = handler.start_worker(Settings.from_env())
handler.set_worker(worker)
image = lambda path: base64.b64encode(open(path, "rb").read()).decode()
out = handler.handler({"id": "no-torch", "input": {"person_image": image(sys.argv[1]),
                                                   "cloth_image": image(sys.argv[2])}})
print(json.dumps({"error": out.get("error"), "random": worker.model.weights.random,
                  "backend": worker.model.backend, "parser": worker.model.person_parser.backend,
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""


@needs_shared
def test_a_warm_cache_serves_a_photo_without_importing_torch(random_ckpt_dir, ov_model):
    """Issue 16's cold start and memory: with both exports cached (the pipeline's and the
    parser's), a worker starts, analyses an ordinary photo and serves it on numpy, PIL, MediaPipe
    and OpenVINO alone. Whether the files hold random weights comes from the export's manifest."""
    assert ov_model.person_parser.backend == "openvino"       # fills the parser's cache entry
    env = {**os.environ, "CHECKPOINT_DIR": str(random_ckpt_dir), "BACKEND": "openvino",
           "DEVICE": "cpu", "PRECISION": "fp32", "LOG_LEVEL": "WARNING"}
    env.pop("OPENVINO_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH,
                          str(PHOTOS / "person" / "01008_00.jpg"),
                          str(PHOTOS / "cloth" / "00126_00.jpg")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"error": None, "random": True, "backend": "openvino", "parser": "openvino",
                      "torch": []}
