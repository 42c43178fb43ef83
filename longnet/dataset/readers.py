"""Image readers/writers under nnU-Net's class names, so plans files and model folders name the same classes.

Every reader turns a case's channel files into a float32 array C×Z×Y×X (2D images get Z = 1) and a props dict
with `spacing` in array order; `read_seg` gives int16 1×Z×Y×X; `write_seg` writes a label map back in the
input's format and geometry, atomically. Which class serves a dataset is chosen in `longnet.dataset.reader_choice`.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from longnet.dataset.io import checked_label_values, geometry_mismatch, read_image_files, write_seg
from longnet.dataset.value_checks import check_pil_header, check_spacing, check_tiff_header, check_voxel_values
from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import atomic_path, load_json, save_json

_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def strip_ending(name: str, endings: Sequence[str]) -> str:
    """`name` without the first of `endings` it ends with (case-insensitive), else without its last suffix."""
    for e in sorted(endings, key=len, reverse=True):
        if name.lower().endswith(e.lower()):
            return name[: -len(e)]
    return name.rsplit(".", 1)[0] if "." in name else name


def label_write_dtype(seg: np.ndarray) -> type:
    """nnU-Net's rule for label files: uint8 when every value is below 255, else uint16."""
    return np.uint8 if seg.max(initial=0) < 255 else np.uint16


def _spacing_problem(a: Sequence[float], b: Sequence[float], tol: float = 1e-3) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape != b.shape or bool(np.any(np.abs(a - b) > tol * np.maximum(1.0, np.abs(a))))


def props_mismatch(shape_a, props_a: dict, shape_b, props_b: dict) -> str | None:
    """How image b's grid differs from image a's, or None. Uses the full SimpleITK geometry when both have
    one, else size and spacing (all that natural images and TIFFs carry)."""
    if "sitk_stuff" in props_a and "sitk_stuff" in props_b:
        return geometry_mismatch(shape_a, props_a["sitk_stuff"], shape_b, props_b["sitk_stuff"])
    diffs = []
    if tuple(shape_a) != tuple(shape_b):
        diffs.append(f"size {tuple(shape_b)[::-1]} vs {tuple(shape_a)[::-1]}")
    if _spacing_problem(props_a["spacing"], props_b["spacing"]):
        diffs.append(f"spacing {list(props_b['spacing'])} vs {list(props_a['spacing'])}")
    return "; ".join(diffs) or None


class ImageReaderWriter:
    """Base class: one family of file formats. Subclasses set `supported_file_endings` and the three methods."""

    supported_file_endings: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def read_images(self, files: Sequence[str | Path], expected_dim: int | None = None) -> tuple[np.ndarray, dict]:
        """Channel files of one case -> (float32 C×Z×Y×X, props). `expected_dim` (2/3) refuses other images."""
        raise NotImplementedError

    def read_seg(self, path: str | Path, expected_dim: int | None = None) -> tuple[np.ndarray, dict]:
        """A label map -> (int16 1×Z×Y×X, props); NaN, fractions and out-of-range values are errors."""
        data, props = self.read_seg_values(path, expected_dim)
        return checked_label_values(data, path), props

    def read_seg_values(self, path: str | Path, expected_dim: int | None = None) -> tuple[np.ndarray, dict]:
        """A label map as read (float32 1×Z×Y×X), unchecked, so an integrity check can list every bad value."""
        return self.read_images([path], expected_dim)

    def write_seg(self, seg: np.ndarray, dest: str | Path, props: dict) -> None:
        """Write a (1×)Z×Y×X label map with the geometry in `props` (from `read_images`), atomically."""
        raise NotImplementedError

    def image_dimension(self, path: str | Path) -> int | None:
        """2 or 3 from the file (cheap where the format allows); None if it cannot be read."""
        try:
            data, _ = self.read_images([path])
        except LongnetError:
            return None
        return 2 if data.shape[1] == 1 else 3

    def can_read(self, path: str | Path) -> bool:
        """Whether this class reads `path` (the test nnU-Net applies to a dataset's example image)."""
        return self.image_dimension(path) is not None

    def supports(self, file_ending: str) -> bool:
        return file_ending.lower() in (e.lower() for e in self.supported_file_endings)

    @staticmethod
    def _check_dim(path: Path, dim: int, expected_dim: int | None) -> None:
        if expected_dim is not None and dim != expected_dim:
            raise DatasetError(f"image is {dim}D but the dataset is {expected_dim}D", path)

    @staticmethod
    def _stack(arrays: list[np.ndarray], files: Sequence[str | Path], spacing: list[float]) -> np.ndarray:
        """Stack per-file channel blocks, refusing files whose size differs from the first one's."""
        for f, a in zip(files[1:], arrays[1:]):
            problem = props_mismatch(arrays[0].shape[1:], {"spacing": spacing}, a.shape[1:], {"spacing": spacing})
            if problem:
                raise DatasetError(f"channel geometry differs from {Path(files[0]).name}: {problem}", f)
        return np.concatenate(arrays).astype(np.float32, copy=False)


class SimpleITKIO(ImageReaderWriter):
    """NIfTI (.nii.gz), NRRD, MetaImage, GIPL through SimpleITK; `sitk_stuff` keeps spacing/origin/direction.

    2D images -> 1×1×Y×X with spacing (999·max, sy, sx). Beyond nnU-Net's endings, .mhd/.nhdr/.gipl.gz are read
    too (longnet always did); .nii goes to NibabelIO, as in nnU-Net."""

    supported_file_endings = (".nii.gz", ".nrrd", ".mha", ".gipl", ".mhd", ".nhdr", ".gipl.gz")
    orientation: ClassVar[str | None] = None

    def read_images(self, files, expected_dim=None):
        return read_image_files(files, expected_dim, orientation=self.orientation)

    def write_seg(self, seg, dest, props):
        write_seg(seg, dest, props)

    def image_dimension(self, path):
        from longnet.dataset.io import checked_header

        try:
            reader = checked_header(path)  # a header that would be refused does not vote: its read names it
        except LongnetError:
            return None
        return 2 if reader.GetDimension() == 2 else 3


class NibabelIO(SimpleITKIO):
    """nnU-Net reads these NIfTI files with nibabel; longnet maps the name to its SimpleITK reader, which yields
    the same arrays (voxel order z, y, x, direction not applied) and spacing, and writes the geometry back."""

    supported_file_endings = (".nii", ".nii.gz")


class NibabelIOWithReorient(NibabelIO):
    """nnU-Net's nibabel reader that reorients to RAS first; here SimpleITK's DICOMOrient to "RAS" (the same
    voxel order as nibabel's closest canonical), undone when a label map is written."""

    orientation = "RAS"


class SimpleITKIOWithReorient(SimpleITKIO):
    """SimpleITK reader that reorients images to RAS (undone on writing), for plans that name it."""

    orientation = "RAS"


class NaturalImage2DIO(ImageReaderWriter):
    """PNG, BMP and 2D TIFF: a gray image -> 1 channel, RGB/RGBA (last axis 3/4) -> 3/4 channels, each 1×H×W.

    Spacing is (999, 1, 1): such images carry none, and the huge z spacing keeps the single slice apart, so only
    the 2d configuration is planned. Label maps are written as `seg[0]` in the file's own format."""

    supported_file_endings = (".png", ".bmp", ".tif")

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        if not path.is_file():
            raise DatasetError("file not found", path)
        try:
            if path.suffix.lower() in (".tif", ".tiff"):
                import tifffile

                check_tiff_header(path)
                return np.asarray(tifffile.imread(str(path)))
            from PIL import Image

            with Image.open(path) as im:
                check_pil_header(im, path)
                return np.asarray(im)
        except DatasetError:
            raise
        except Exception as e:  # Pillow/tifffile raise many types for a corrupt file
            raise DatasetError(f"unreadable image file ({type(e).__name__}: {str(e).strip()[:200]})", path) from None

    def read_images(self, files, expected_dim=None):
        if len(files) == 0:
            raise ValueError("read_images needs at least one file")
        blocks = []
        for f in files:
            path = Path(f)
            arr = self._load(path)
            check_voxel_values(arr, path)
            if arr.ndim == 2:
                arr = arr[None]
            elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
                arr = np.moveaxis(arr, -1, 0)
            else:
                raise DatasetError(f"not a 2D gray, RGB or RGBA image (array shape {arr.shape})", path)
            self._check_dim(path, 2, expected_dim)
            blocks.append(arr[:, None].astype(np.float32))
        spacing = [999.0, 1.0, 1.0]
        return self._stack(blocks, files, spacing), {"spacing": spacing}

    def write_seg(self, seg, dest, props):
        seg = np.asarray(seg)
        while seg.ndim > 2 and seg.shape[0] == 1:
            seg = seg[0]
        if seg.ndim != 2:
            raise ValueError(f"NaturalImage2DIO writes 2D label maps, got shape {seg.shape}")
        seg = seg.astype(label_write_dtype(seg))
        dest = Path(dest)
        ending = dest.suffix.lower()
        with atomic_path(dest, suffix=dest.suffix) as tmp:
            if ending in (".tif", ".tiff"):
                import tifffile

                tifffile.imwrite(str(tmp), seg)
                return
            if ending == ".bmp" and seg.dtype != np.uint8:
                raise LongnetError("label values of 255 and above do not fit an 8-bit BMP file", dest)
            from PIL import Image

            Image.fromarray(seg).save(tmp, format="BMP" if ending == ".bmp" else "PNG")

    def image_dimension(self, path):
        return 2 if self.can_read(path) else None

    def can_read(self, path):
        try:
            self.read_images([path])
        except LongnetError:
            return False
        return True


class Tiff3DIO(ImageReaderWriter):
    """3D TIFF stacks (z, y, x). Spacing (array order) comes from the sidecar `<case>.json` key `spacing`
    (images: `CASE_0000.tif` -> `CASE.json`; label maps: `CASE.tif` -> `CASE.json`), else (1, 1, 1).
    `write_seg` writes a zlib-compressed TIFF plus that sidecar."""

    supported_file_endings = (".tif", ".tiff")

    def sidecar(self, path: str | Path, channel_file: bool) -> Path:
        path = Path(path)
        stem = strip_ending(path.name, self.supported_file_endings)
        if channel_file:
            stem = _CHANNEL_SUFFIX.sub("", stem)
        return path.with_name(stem + ".json")

    def _spacing(self, path: Path, channel_file: bool) -> list[float]:
        side = self.sidecar(path, channel_file)
        if not side.is_file():
            warnings.warn(f"{side.parent}: TIFF without a spacing sidecar (CASE.json); using spacing (1, 1, 1)",
                          stacklevel=3)  # one message per folder, not one per file
            return [1.0, 1.0, 1.0]
        meta = load_json(side)
        spacing = meta.get("spacing") if isinstance(meta, dict) else None
        if not isinstance(spacing, list) or len(spacing) != 3 or not all(
                isinstance(s, (int, float)) and s > 0 for s in spacing):
            raise DatasetError(f"'spacing' must be a list of 3 positive numbers (z, y, x), got {spacing!r}", side)
        check_spacing(spacing, side)  # also inf and absurdly small values
        return [float(s) for s in spacing]

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        import tifffile

        if not path.is_file():
            raise DatasetError("file not found", path)
        check_tiff_header(path)
        try:
            return np.asarray(tifffile.imread(str(path)))
        except Exception as e:
            raise DatasetError(f"unreadable image file ({type(e).__name__}: {str(e).strip()[:200]})", path) from None

    def _read(self, files, expected_dim, channel_file: bool):
        if len(files) == 0:
            raise ValueError("read_images needs at least one file")
        blocks = []
        for f in files:
            path = Path(f)
            arr = self._load(path)
            check_voxel_values(arr, path)
            if arr.ndim != 3:
                raise DatasetError(f"a 3D TIFF must hold a (z, y, x) stack, got array shape {arr.shape}", path)
            self._check_dim(path, 3, expected_dim)
            blocks.append(arr[None].astype(np.float32))
        spacing = self._spacing(Path(files[0]), channel_file)
        return self._stack(blocks, files, spacing), {"spacing": spacing}

    def read_images(self, files, expected_dim=None):
        return self._read(files, expected_dim, channel_file=True)

    def read_seg_values(self, path, expected_dim=None):
        return self._read([path], expected_dim, channel_file=False)

    def write_seg(self, seg, dest, props):
        import tifffile

        seg = np.asarray(seg)
        if seg.ndim == 4 and seg.shape[0] == 1:
            seg = seg[0]
        dest = Path(dest)
        with atomic_path(dest, suffix=dest.suffix) as tmp:
            tifffile.imwrite(str(tmp), seg.astype(label_write_dtype(seg)), compression="zlib",
                             photometric="minisblack")  # a stack of 3 or 4 slices is not an RGB(A) image
        save_json({"spacing": [float(s) for s in props["spacing"]]}, self.sidecar(dest, channel_file=False))

    def image_dimension(self, path):
        import tifffile

        try:
            with tifffile.TiffFile(str(path)) as tf:
                ndim = len(tf.series[0].shape)
        except Exception:
            return None
        return 3 if ndim == 3 else None


#: nnU-Net's fallback order when dataset.json names no class
READER_WRITERS: tuple[type[ImageReaderWriter], ...] = (NaturalImage2DIO, SimpleITKIO, Tiff3DIO, NibabelIO,
                                                       NibabelIOWithReorient)
#: every name a plans file or dataset.json may use
READER_WRITERS_BY_NAME: dict[str, type[ImageReaderWriter]] = {
    c.__name__: c for c in (*READER_WRITERS, SimpleITKIOWithReorient)}
