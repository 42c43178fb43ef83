"""Transforms that bring a forecast's visits onto its last context visit, registered only when none exists.

Sources, in order: the transforms aligned preprocessing stored for both visits (the subject is in the
preprocessed dataset with these very images: composed through the subject's first visit), then this output
folder's `alignments/` from an earlier run on the same files (ITK text transforms plus the SHA-1 of the two
images, so a changed file is registered again), and only then a fresh registration, which is saved there.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import SimpleITK as sitk

from longnet.api import LongnetError, atomic_path, load_json, save_json, stored_transform_between


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class VisitAlignments:
    """Transform (last-context grid points -> visit points) per visit, counted by where it came from."""

    def __init__(self, mode: str, preprocessed_folder: Path | None, cache_folder: Path):
        self.mode, self.preprocessed_folder, self.cache_folder = mode, preprocessed_folder, Path(cache_folder)
        self.counts = {"preprocessing": 0, "cache": 0, "registered": 0}
        self._hashes: dict[Path, str] = {}  # a subject's reference image serves all its visits: hash it once

    def _cache_files(self, case: str, reference_case: str) -> tuple[Path, Path]:
        stem = f"{case}_to_{reference_case}"
        return self.cache_folder / f"{stem}.tfm", self.cache_folder / f"{stem}.json"

    def _sha1(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = _sha1(path)
        return self._hashes[path]

    def _key(self, case_file: Path, reference_file: Path) -> dict:
        return {"mode": self.mode, "visit_sha1": self._sha1(case_file), "reference_sha1": self._sha1(reference_file)}

    def lookup(self, case: str, case_file: Path, geometry: dict, reference_case: str, reference_file: Path,
               reference_geometry: dict) -> sitk.Transform | None:
        """An existing transform, or None (then `register` and `store`)."""
        if self.preprocessed_folder is not None:
            tx = stored_transform_between(self.preprocessed_folder, case, reference_case, geometry, reference_geometry)
            if tx is not None:
                self.counts["preprocessing"] += 1
                return tx
        tfm, meta = self._cache_files(case, reference_case)
        if tfm.is_file() and meta.is_file():
            try:
                if load_json(meta) == self._key(case_file, reference_file):
                    tx = sitk.ReadTransform(str(tfm))
                    self.counts["cache"] += 1
                    return tx
            except (OSError, ValueError, RuntimeError):
                pass  # unreadable cache entry: register again and overwrite it
        return None

    def store(self, transform: sitk.Transform, case: str, case_file: Path, reference_case: str,
              reference_file: Path) -> None:
        self.counts["registered"] += 1
        tfm, meta = self._cache_files(case, reference_case)
        tfm.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(tfm, suffix=".tfm") as tmp:
                sitk.WriteTransform(transform, str(tmp))
        except RuntimeError as e:
            raise LongnetError(f"could not write the alignment ({str(e).strip().splitlines()[-1][:200]})", tfm) from None
        save_json(self._key(case_file, reference_file), meta)

    def summary(self) -> str:
        c = self.counts
        return (f"alignments: {c['preprocessing']} from preprocessing, {c['cache']} from the cache of earlier runs "
                f"({self.cache_folder}), {c['registered']} registered")
