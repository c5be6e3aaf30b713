"""Issue 23 (the CPU flavour): a prepared OpenVINO export serves without the checkpoint files and
without torch, and every way it cannot is a clear start-up error naming the command that prepares
it. Issue 21, item 10: random-weight exports are pruned.

"Without torch" is real here: ``sys.modules["torch"] = None`` makes ``import torch`` fail and
``importlib.util.find_spec("torch")`` say it is absent, as in the CPU flavour's install (the venv
test in tests/deploy/test_cpu_flavour.py runs the same in an install that never had it). The
pipeline's export is the session's one (``random_ckpt_dir/openvino``, shared with
tests/model/test_openvino.py); the record is written by the documented command.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

import handler
from cpvton_infer import CPVTONPlusModel
from openvino_backend import export_cache, prepared
from openvino_backend.__main__ import main as prepare_main
from openvino_backend.runtime import BackendUnavailable
from vton_core.checkpoints import GMM_FILE, TOM_FILE
from vton_core.digest import file_sha256
from vton_core.errors import CheckpointError
from worker import sample_images
from worker.settings import Settings

pytest.importorskip("openvino")
COMMAND = "python -m openvino_backend"


@pytest.fixture(scope="module")
def prepared_dir(random_ckpt_dir) -> Path:
    """``random_ckpt_dir/openvino`` after the prepare command (a cache hit after the first)."""
    assert prepare_main([str(random_ckpt_dir)]) == 0
    return random_ckpt_dir / "openvino"


@pytest.fixture
def export_only(prepared_dir, tmp_path) -> Path:
    """A checkpoint folder holding the prepared export and no checkpoint files (the CPU image)."""
    ckpt = tmp_path / "checkpoints"
    record = json.loads((prepared_dir / export_cache.RECORD).read_text())
    for name in record["entries"].values():
        shutil.copytree(prepared_dir / name, ckpt / "openvino" / name)
    shutil.copy(prepared_dir / export_cache.RECORD, ckpt / "openvino" / export_cache.RECORD)
    return ckpt


@pytest.fixture
def no_torch(monkeypatch):
    """Make torch unimportable, as in the CPU flavour's install."""
    monkeypatch.setitem(sys.modules, "torch", None)
    assert not prepared.torch_available()


def _edit_record(ckpt: Path, **changes) -> None:
    path = ckpt / "openvino" / export_cache.RECORD
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_the_prepare_command_records_the_weights(random_ckpt_dir, prepared_dir):
    record = prepared.read_record(prepared_dir)
    assert record.gmm_sha256 == file_sha256(random_ckpt_dir / GMM_FILE)
    assert record.tom_sha256 == file_sha256(random_ckpt_dir / TOM_FILE)
    assert record.random and not record.generated           # random-recipe files, not generated
    for role in ("pipeline", "parser"):
        assert export_cache.entry_problem(prepared_dir / record.entries[role], json.loads(
            (prepared_dir / record.entries[role] / "manifest.json").read_text())["identity"]) is None


def test_a_worker_without_files_or_torch_serves_the_prepared_export(export_only, no_torch):
    settings = Settings(checkpoint_dir=export_only, device="cpu", precision="fp32", warmup=False)
    handler.check_backend(settings)
    handler.check_checkpoints(settings)
    model = handler.load_model(settings)
    assert model.backend == "openvino" and model.weights.random
    assert model.weights.gmm_path is None                  # no file was read
    person = sample_images.synthetic_person()
    cloth = sample_images.garment()
    result = model.try_on(person.image, cloth, parse=person.parse, pose=person.pose,
                          person_mask=person.mask, cloth_mask=sample_images.garment_mask(cloth))
    assert result.random_weights and result.image.size == person.image.size
    assert model.person_parser.backend == "openvino"       # the parser's entry, no export


@pytest.mark.parametrize("case", ["no export", "random requested, no export"])
def test_no_export_without_torch_names_the_command(tmp_path, no_torch, case):
    settings = Settings(checkpoint_dir=tmp_path / "empty", device="cpu",
                        allow_random_weights=case != "no export")
    with pytest.raises(CheckpointError, match=COMMAND) as err:
        handler.check_checkpoints(settings)
    assert "no torch" in err.value.message
    with pytest.raises(CheckpointError, match=COMMAND):
        handler.load_model(settings)


def test_checkpoint_files_without_an_export_and_without_torch_name_the_command(
        random_ckpt_dir, tmp_path, no_torch):
    ckpt = tmp_path / "checkpoints"
    for f in (GMM_FILE, TOM_FILE):
        (ckpt / f).parent.mkdir(parents=True)
        shutil.copy(random_ckpt_dir / f, ckpt / f)
    settings = Settings(checkpoint_dir=ckpt, device="cpu")
    handler.check_checkpoints(settings)                    # the files are there
    with pytest.raises(CheckpointError, match=COMMAND):
        handler.load_model(settings)
    assert not any((ckpt / "openvino").glob("cpvton_pipeline-*"))   # nothing half-written


def test_backend_torch_without_torch_is_a_clear_error(export_only, no_torch):
    with pytest.raises(RuntimeError, match="BACKEND=torch.*no PyTorch"):
        handler.check_backend(Settings(checkpoint_dir=export_only, backend="torch"))
    with pytest.raises(BackendUnavailable, match="needs PyTorch"):
        CPVTONPlusModel(export_only, device="cpu", backend="torch")


def test_generated_random_weights_are_served_only_where_allowed(export_only, no_torch):
    _edit_record(export_only, generated=True)
    with pytest.raises(CheckpointError, match="ALLOW_RANDOM_WEIGHTS=1"):
        CPVTONPlusModel(export_only, device="cpu", precision="fp32")
    model = CPVTONPlusModel(export_only, device="cpu", precision="fp32", allow_random_weights=True)
    assert model.weights.random


def test_expected_hashes_are_checked_against_the_record(export_only, no_torch):
    record = prepared.read_record(export_only / "openvino")
    ok = CPVTONPlusModel(export_only, device="cpu", precision="fp32",
                         gmm_sha256=record.gmm_sha256, tom_sha256=record.tom_sha256)
    assert ok.weights.gmm_sha256 == record.gmm_sha256
    with pytest.raises(CheckpointError, match="TOM checkpoint with sha256"):
        CPVTONPlusModel(export_only, device="cpu", tom_sha256="0" * 64)


@pytest.mark.parametrize("damage", ["truncated bin", "other OpenVINO", "bad record"])
def test_a_damaged_or_foreign_export_is_refused_with_the_command(export_only, no_torch, damage):
    record = prepared.read_record(export_only / "openvino")
    entry = export_only / "openvino" / record.entries["pipeline"]
    if damage == "truncated bin":
        (entry / "model.bin").write_bytes((entry / "model.bin").read_bytes()[:1000])
    elif damage == "other OpenVINO":        # an export made with another version: another key
        entry.rename(entry.with_name("cpvton_pipeline-0000000000000000"))
        _edit_record(export_only, entries={**record.entries,
                                           "pipeline": "cpvton_pipeline-0000000000000000"})
    else:
        _edit_record(export_only, version=99)
    with pytest.raises(CheckpointError, match=COMMAND):
        CPVTONPlusModel(export_only, device="cpu", precision="fp32")


def test_the_prepare_command_needs_files_or_random_weights(tmp_path, capsys):
    assert prepare_main([str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "--random-weights" in err


# -- pruning of random-weight entries (issue 21, item 10) -----------------------------------------
def _fake_entry(cache: Path, name: str, key: str, *, random: bool, age_s: float) -> Path:
    entry = cache / f"{name}-{key}"
    entry.mkdir(parents=True)
    for file in export_cache.MODEL_FILES:
        (entry / file).write_bytes(b"x" * 1000)
    manifest = entry / export_cache.MANIFEST
    manifest.write_text(json.dumps({"identity": {}, "files": {}, "facts": {"random": random}}))
    past = time.time() - age_s
    os.utime(manifest, (past, past))
    return entry


def test_random_entries_beyond_the_newest_are_pruned_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="openvino_backend.export_cache")
    keep = export_cache.KEEP_RANDOM_EXPORTS
    randoms = [_fake_entry(tmp_path, "cpvton_pipeline", f"{i:016x}", random=True, age_s=100 * i)
               for i in range(keep + 3)]                          # randoms[0] is the newest
    trained = _fake_entry(tmp_path, "cpvton_pipeline", "f" * 16, random=False, age_s=10_000)
    recorded = _fake_entry(tmp_path, "cpvton_pipeline", "e" * 16, random=True, age_s=20_000)
    other_name = _fake_entry(tmp_path, "person_parser", "d" * 16, random=True, age_s=30_000)
    (tmp_path / export_cache.RECORD).write_text(json.dumps({"entries": {"pipeline": recorded.name}}))
    removed = export_cache.prune_random_entries(tmp_path, "cpvton_pipeline")
    assert sorted(removed) == sorted(randoms[keep:])
    assert all(e.is_dir() for e in randoms[:keep] + [trained, recorded, other_name])
    assert caplog.text.count("removed the stale random-weight entry") == len(randoms) - keep


def test_writing_a_random_export_prunes_the_older_ones(tmp_path):
    """Through :func:`export_cache.cached_model`, as the worker and the smoke run write them:
    a cache folder holds at most KEEP_RANDOM_EXPORTS random entries however many are written."""
    def export(xml_path: Path) -> dict:
        Path(xml_path).write_text("<net/>")
        Path(xml_path).with_suffix(".bin").write_bytes(b"0")
        return {"random": True}

    paths = []
    for i in range(export_cache.KEEP_RANDOM_EXPORTS + 2):
        paths.append(export_cache.cached_model(tmp_path, "tiny", {"k": str(i)}, export))
        past = time.time() - 1000 + i          # distinct, increasing manifest times
        os.utime(paths[-1].parent / export_cache.MANIFEST, (past, past))
    left = sorted(p.name for p in tmp_path.glob("tiny-*"))
    assert left == sorted(p.parent.name for p in paths[-export_cache.KEEP_RANDOM_EXPORTS:])
