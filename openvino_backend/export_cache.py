"""A cache of exported OpenVINO models, keyed by the sha256 of what they were made from.

Converting a PyTorch model costs seconds; reading saved IR files costs a fraction of that. So a
model is exported once per *identity* (e.g. the sha256 of its checkpoint files, plus this
package's export format and the OpenVINO version) and kept in ``<cache_dir>/<name>-<key>/``:

    model.xml, model.bin     the OpenVINO IR (fp32 weights; the precision is chosen at compile time)
    manifest.json            the identity, the sha256 of both IR files, and the facts the
                             export learned about its source (e.g. ``random``: the checkpoint
                             holds the random test weights), read back by :func:`model_facts`

An entry is written in a temporary folder beside it and renamed into place (atomic: a reader sees a
complete entry or none). It is validated on every load: a manifest that does not parse, names
another identity or whose file hashes do not match means the entry is rebuilt, never trusted.
Nothing here imports torch: a cache hit costs file hashing only; the ``export`` callable (which
may import torch) runs on a miss.

This is the generic hook for other networks (e.g. the learned person parser): give
:func:`cached_model` a name, an identity and an export function that writes ``model.xml``.

Entries of random test weights (``facts["random"]``) are pruned: each new one written removes the
older random entries of its name beyond the newest :data:`KEEP_RANDOM_EXPORTS` (a smoke run, a test
or a config change each made a fresh 160 MB entry that nothing would read again). Entries of other
weights are never removed, nor any entry a prepared export's record (:data:`RECORD`) names.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Optional

from vton_core.digest import file_sha256

log = logging.getLogger(__name__)

#: Bump when an exported graph changes meaning: older entries are then rebuilt.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: Permissions of an entry's folder: written by its owner, readable by everyone.
ENTRY_MODE = 0o755
MODEL_FILES = ("model.xml", "model.bin")
#: The prepared export's record in a cache folder (see :mod:`openvino_backend.prepared`); the
#: entries it names in ``"entries"`` are never pruned.
RECORD = "export.json"
#: Random-weight entries of one name kept in a cache folder (the newest, by manifest time).
KEEP_RANDOM_EXPORTS = 2
#: The try-on pipeline's graph: its input and output names (``forward_tensors``' keys, in order).
PIPELINE_INPUTS = ("agnostic_gmm", "agnostic_tom", "cloth", "cloth_mask")
PIPELINE_OUTPUTS = ("theta", "grid", "warped_cloth", "warped_mask", "rendered", "composite_mask",
                    "tryon", "warped_grid")

#: Writes ``model.xml`` (and ``.bin``) at the path it is given; may return JSON-able facts about
#: what it exported, kept in the manifest.
Exporter = Callable[[Path], Optional[dict]]


def openvino_version() -> str:
    """The installed OpenVINO runtime's version (raises ImportError when it is not installed)."""
    import openvino
    return openvino.get_version()


def full_identity(name: str, identity: Mapping[str, str]) -> dict[str, str]:
    """The identity an entry is keyed by: the caller's, plus name, format and OpenVINO version."""
    return {**{k: str(v) for k, v in identity.items()}, "name": name,
            "format": str(FORMAT_VERSION), "openvino": openvino_version()}


def entry_dir(cache_dir: Path, name: str, identity: Mapping[str, str]) -> Path:
    """``cache_dir/<name>-<first 16 hex digits of sha256(identity)>``."""
    key = hashlib.sha256(json.dumps(full_identity(name, identity), sort_keys=True).encode())
    return Path(cache_dir) / f"{name}-{key.hexdigest()[:16]}"


def entry_problem(entry: Path, identity: Mapping[str, str]) -> Optional[str]:
    """Why ``entry`` cannot be used for ``identity`` (a full identity), or None if it is valid."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({type(exc).__name__})"
    if not isinstance(manifest, dict) or manifest.get("identity") != dict(identity):
        return "manifest of another identity"
    hashes = manifest.get("files")
    if not isinstance(hashes, dict) or set(hashes) != set(MODEL_FILES):
        return "manifest without file hashes"
    for file in MODEL_FILES:
        path = entry / file
        if not path.is_file():
            return f"{file} missing"
        if file_sha256(path) != hashes[file]:
            return f"{file} does not match its hash"
    return None


def _write_entry(cache_dir: Path, entry: Path, identity: dict, export: Exporter) -> None:
    """Export into a temporary folder in ``cache_dir``, add the manifest, rename it to ``entry``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        # mkdtemp makes the folder private (0700); the entry must be readable by other users,
        # e.g. the image's non-root worker reading what the build wrote as root.
        os.chmod(tmp, ENTRY_MODE)
        _export_with_manifest(tmp, identity, export)
        if entry.exists():                      # a corrupt or stale entry: move it out of the way
            stale = Path(tempfile.mkdtemp(prefix=f".{entry.name}.stale.", dir=cache_dir))
            os.replace(entry, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:                         # another process has just written it
            if entry_problem(entry, identity) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_with_manifest(folder: Path, identity: dict, export: Exporter) -> None:
    """Run ``export`` into ``folder`` and write the manifest (identity, file hashes, facts)."""
    facts = export(folder / MODEL_FILES[0]) or {}
    hashes = {file: file_sha256(folder / file) for file in MODEL_FILES}
    (folder / MANIFEST).write_text(json.dumps({"identity": identity, "files": hashes,
                                               "facts": facts}, indent=1))


def _private_export(name: str, identity: dict, export: Exporter) -> Path:
    """Export into a process-private temporary folder (removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-openvino-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    _export_with_manifest(tmp, identity, export)
    return tmp / MODEL_FILES[0]


def model_facts(xml_path: Path) -> dict:
    """The facts the export recorded for the model at ``xml_path`` (a path that
    :func:`cached_model` returned, so its manifest was validated); {} when it recorded none."""
    manifest = json.loads((Path(xml_path).parent / MANIFEST).read_text())
    facts = manifest.get("facts", {})
    return facts if isinstance(facts, dict) else {}


def cached_model(cache_dir: Path, name: str, identity: Mapping[str, str], export: Exporter) -> Path:
    """The ``model.xml`` of ``name`` for ``identity``, exported by ``export(xml_path)`` on a miss.

    A valid entry is reused; an invalid one is logged and rebuilt. When ``cache_dir`` cannot be
    written, the model is exported for this process only and a warning says so (every start then
    pays the export). Raises ImportError when OpenVINO is not installed.
    """
    cache_dir = Path(cache_dir)
    ident = full_identity(name, identity)
    entry = entry_dir(cache_dir, name, identity)
    if entry.is_dir():
        problem = entry_problem(entry, ident)
        if problem is None:
            log.info("OpenVINO export cache hit: %s", entry)
            return entry / MODEL_FILES[0]
        log.warning("OpenVINO export cache entry %s is unusable (%s): rebuilding it", entry, problem)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".probe.", dir=cache_dir)
        os.rmdir(probe)
    except OSError as exc:
        log.warning("OpenVINO export cache folder %s is not writable (%s): exporting for this "
                    "process only (every start pays the export); set OPENVINO_CACHE_DIR to a "
                    "writable folder", cache_dir, type(exc).__name__)
        return _private_export(name, ident, export)
    log.info("OpenVINO export cache miss: exporting %s to %s", name, entry)
    _write_entry(cache_dir, entry, ident, export)
    if model_facts(entry / MODEL_FILES[0]).get("random"):
        prune_random_entries(cache_dir, name)
    return entry / MODEL_FILES[0]


def _is_random_entry(entry: Path) -> bool:
    """Whether ``entry``'s manifest says it holds random test weights (False when unreadable:
    an entry we cannot read is not ours to judge, so it is left alone)."""
    try:
        return model_facts(entry / MODEL_FILES[0]).get("random") is True
    except (OSError, ValueError, AttributeError):
        return False


def _recorded_entries(cache_dir: Path) -> set[str]:
    """The entry folder names that the prepared export's record in ``cache_dir`` names."""
    try:
        entries = json.loads((cache_dir / RECORD).read_text()).get("entries", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {str(v) for v in entries.values()} if isinstance(entries, dict) else set()


def prune_random_entries(cache_dir: Path, name: str, keep: int = KEEP_RANDOM_EXPORTS) -> list[Path]:
    """Remove the random-weight entries of ``name`` in ``cache_dir`` beyond the newest ``keep``
    (by their manifest's modification time), except those the prepared export's record names.
    Returns the removed folders; each removal is logged with its size. A folder that cannot be
    removed (read-only volume) is logged and kept."""
    cache_dir = Path(cache_dir)
    protected = _recorded_entries(cache_dir)
    random_entries = [e for e in cache_dir.glob(f"{name}-*")
                      if e.is_dir() and e.name not in protected and _is_random_entry(e)]

    def written(entry: Path) -> float:       # 0 for an entry removed meanwhile by another process
        try:
            return (entry / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    random_entries.sort(key=written, reverse=True)
    removed = []
    for entry in random_entries[keep:]:
        try:
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            shutil.rmtree(entry)
        except OSError as exc:
            log.warning("OpenVINO export cache: cannot remove the stale random-weight entry %s "
                        "(%s)", entry, type(exc).__name__)
            continue
        log.info("OpenVINO export cache: removed the stale random-weight entry %s (%.0f MB; "
                 "the newest %d are kept)", entry, size / 1e6, keep)
        removed.append(entry)
    return removed
