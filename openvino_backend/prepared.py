"""A prepared export: the OpenVINO models of one checkpoint pair, served without torch and without
the checkpoint files.

``python -m openvino_backend CHECKPOINT_DIR`` (with torch: the full environment or the GPU image)
fills the export cache (default ``CHECKPOINT_DIR/openvino``) with the try-on pipeline's graph and
the person parser's, and writes the record :data:`~openvino_backend.export_cache.RECORD` beside
them: which entries they are and the identity of the weights they were made from (the checkpoint
files' sha256, whether they are the random test weights, and whether those were *generated* in
memory because no files were given). The CPU image ships that folder alone; a worker on a network
volume reads it from there. A worker whose checkpoint files are absent serves the recorded export
(validated like any cache entry: identity, OpenVINO version and file hashes); one that has the
files and finds no matching entry exports it, which needs torch — in a torch-free install that is
a :class:`~vton_core.errors.CheckpointError` naming :data:`PREPARE_COMMAND`.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openvino_backend.export_cache import RECORD, entry_dir, entry_problem, full_identity, openvino_version
from vton_core.errors import CheckpointError

log = logging.getLogger(__name__)

#: Bump when the record's fields change meaning.
RECORD_VERSION = 1
#: The record's permissions: readable by every user (the image's worker is not root).
RECORD_MODE = 0o644
#: The command that prepares an export (README_RUNPOD.md § CPU flavour shows it with ./run.sh
#: and in the GPU image).
PREPARE_COMMAND = "python -m openvino_backend CHECKPOINT_DIR [--cache-dir DIR] [--random-weights]"
HOW_TO_PREPARE = (f"prepare the export with `{PREPARE_COMMAND}` in the full environment "
                  "(./run.sh) or the GPU image, then point CHECKPOINT_DIR (or OPENVINO_CACHE_DIR) "
                  "at it (README_RUNPOD.md § CPU flavour)")


def torch_available() -> bool:
    """Whether torch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str, cache_dir: Path) -> None:
    """Called by an exporter before it imports torch: in a torch-free install (the CPU flavour)
    raise :class:`CheckpointError` saying that ``what`` has no export in ``cache_dir`` and how to
    prepare one."""
    if not torch_available():
        raise CheckpointError(f"no usable OpenVINO export of {what} in {cache_dir}, and this "
                              f"install has no torch to make one (the CPU flavour serves "
                              f"prepared exports only): {HOW_TO_PREPARE}")


@dataclass(frozen=True)
class PreparedExport:
    """What a record says: the cache folder, its entries by role (``"pipeline"``, ``"parser"``),
    the weights' sha256, ``random`` (the random test weights) and ``generated`` (made in memory
    because no checkpoint files were given: served only where random weights are allowed)."""

    cache_dir: Path
    entries: dict
    gmm_sha256: str
    tom_sha256: str
    random: bool
    generated: bool
    openvino: str

    def pipeline_xml(self, name: str, identity: dict) -> Path:
        """The pipeline graph's ``model.xml`` for ``identity`` (the pipeline's cache identity);
        raises :class:`CheckpointError` naming what does not match and how to re-prepare."""
        entry = self.cache_dir / str(self.entries.get("pipeline", ""))
        if entry != entry_dir(self.cache_dir, name, identity):
            raise CheckpointError(
                f"the prepared OpenVINO export in {self.cache_dir} was made for another model "
                f"configuration or OpenVINO version ({self.openvino}; this install has "
                f"{openvino_version()}): {HOW_TO_PREPARE}")
        problem = entry_problem(entry, full_identity(name, identity))
        if problem is not None:
            raise CheckpointError(f"the prepared OpenVINO export {entry} is unusable ({problem}): "
                                  f"{HOW_TO_PREPARE}")
        return entry / "model.xml"


def read_record(cache_dir: Path) -> PreparedExport | None:
    """The record in ``cache_dir``, or None when there is none; a record that does not parse
    raises :class:`CheckpointError` (it was written by this package, so it is not ignored)."""
    path = Path(cache_dir) / RECORD
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable prepared-export record {path} ({type(exc).__name__}): "
                              f"{HOW_TO_PREPARE}") from None
    try:
        if doc["version"] != RECORD_VERSION:
            raise ValueError(f"record version {doc['version']!r}")
        return PreparedExport(Path(cache_dir), dict(doc["entries"]), str(doc["gmm_sha256"]),
                              str(doc["tom_sha256"]), bool(doc["random"]),
                              bool(doc["generated"]), str(doc["openvino"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed prepared-export record {path} ({exc}): "
                              f"{HOW_TO_PREPARE}") from None


def write_record(cache_dir: Path, entries: dict[str, Path], *, gmm_sha256: str, tom_sha256: str,
                 random: bool, generated: bool) -> Path:
    """Write the record (atomically: a temporary file renamed into place) naming ``entries``
    (role → an entry's ``model.xml`` or folder inside ``cache_dir``); returns its path."""
    cache_dir = Path(cache_dir)
    names = {}
    for role, path in entries.items():
        folder = Path(path).parent if Path(path).suffix == ".xml" else Path(path)
        if folder.parent.resolve() != cache_dir.resolve():
            raise ValueError(f"{role} entry {folder} is not in {cache_dir}")
        names[role] = folder.name
    doc = {"version": RECORD_VERSION, "entries": names, "gmm_sha256": gmm_sha256,
           "tom_sha256": tom_sha256, "random": random, "generated": generated,
           "openvino": openvino_version()}
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD}.", dir=cache_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.chmod(tmp, RECORD_MODE)
    os.replace(tmp, cache_dir / RECORD)
    log.info("prepared export recorded in %s (random=%s)", cache_dir / RECORD, random)
    return cache_dir / RECORD
