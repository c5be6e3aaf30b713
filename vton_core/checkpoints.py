"""Checkpoint files without torch: where they are, their identity (sha256) and how to get them.

What the serving path needs on the OpenVINO backend, whose warm start never imports torch; the
loading itself (strict keys and shapes, random-weight recognition) is in :mod:`vton_core.weights`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vton_core.digest import file_sha256
from vton_core.errors import CheckpointError

GMM_FILE = Path("GMM") / "gmm_final.pth"
TOM_FILE = Path("TOM") / "tom_final.pth"
HOW_TO_GET = ("Get the official CP-VTON+ checkpoints with ./download_checkpoints.sh "
              "(see README_RUNPOD.md), or point CHECKPOINT_DIR / GMM_CHECKPOINT / TOM_CHECKPOINT "
              "at them; ALLOW_RANDOM_WEIGHTS=1 (the worker, the smoke run and the Python API; in "
              "Python also allow_random_weights=True) runs without them, on random weights (a "
              "smoke run: the pictures are noise).")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from. ``random`` is True for our deterministic random
    weights, whether made in memory (``allow_random_weights``) or read from a file that
    ``tools/make_random_checkpoints.py`` wrote (recognised by :func:`vton_core.weights.is_random_recipe`)."""

    gmm_sha256: str
    tom_sha256: str
    random: bool
    gmm_path: str | None = None
    tom_path: str | None = None
    #: Why the weights are random (None when they are not): for the operator's log, not clients.
    random_reason: str | None = None

    def short(self) -> dict:
        """A compact, client-safe identity: sha256 prefixes and the random flag (no paths)."""
        return {"gmm_sha256": self.gmm_sha256[:12], "tom_sha256": self.tom_sha256[:12],
                "random": self.random}


def checked_file_sha256(path: Path, expected_sha256: str | None = None) -> str:
    """The sha256 of checkpoint ``path``; raises :class:`CheckpointError` (naming the path) if the
    file is missing or (when ``expected_sha256`` is given) has another hash."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. {HOW_TO_GET}")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256.strip().lower():
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:16]}…, not the expected "
            f"{expected_sha256.strip().lower()[:16]}…: the file was modified or is another "
            f"file. {HOW_TO_GET}")
    return digest
