"""Reading FER2013 in both formats users have, and the array files passed between stages.

Formats:
- the image-folder zip (Kaggle "msambare/fer2013"): ``train/<label>/*.jpg``, ``test/<label>/*.jpg``;
- the original ``fer2013.csv``: ``emotion,pixels,Usage`` with its own label order.

Between stages a split is one ``.npz`` with ``images`` (N, 48, 48) uint8, ``labels`` (N,) int64
in ``EMOTIONS`` order and ``names`` (N,) str (where each image came from).
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from emotion_recognition.labels import CSV_CODE_TO_INDEX, EMOTION_INDEX, EMOTIONS
from emotion_recognition.preprocessing import FACE_SIZE, IMAGE_SUFFIXES, resize_face
from emotion_recognition.pipeline.stage_io import StageInputError, atomic_path

SPLITS = ("train", "test")
CSV_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "test"}  # PrivateTest is not used
# Zip limits, checked before anything is decompressed (a zip bomb is a few KB on disk): FER2013 is
# 35,887 JPEGs of about 1.5 KB; a compression ratio over 100 is not a photo.
MAX_ZIP_MEMBERS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES, MAX_RATIO = 200_000, 10 << 20, 2 << 30, 100


class DatasetError(StageInputError):
    """The dataset is unusable; the message names the file/entry and what was expected."""


@dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray
    names: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.labels[index], self.names[index])


@dataclass
class LoadReport:
    skipped: list[str] = field(default_factory=list)
    ignored_rows: Counter = field(default_factory=Counter)



def checked_member_path(name: str) -> PurePosixPath:
    """Return a zip entry's path, refusing any that would land outside the extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetError(f"unsafe entry {name!r} in zip: paths must stay inside the archive's folder")
    return path


def decode_gray(data: bytes, name: str) -> np.ndarray | None:
    """Decode image bytes to 48x48 uint8 grayscale; None if the bytes are not a readable image."""
    if not data:  # cv2.imdecode raises on an empty buffer instead of returning None
        return None
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if array is None or array.size == 0:
        return None
    if array.shape != (FACE_SIZE, FACE_SIZE):
        array = resize_face(array)
    return array


def check_zip_limits(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose directory declares more than FER2013 could ever need."""
    if len(members) > MAX_ZIP_MEMBERS:
        raise DatasetError(f"{path}: {len(members)} zip entries, more than the limit of {MAX_ZIP_MEMBERS}")
    total = sum(info.file_size for info in members)
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"{path}: {total} bytes uncompressed, more than the limit of {MAX_TOTAL_BYTES}")
    for info in members:
        if info.file_size > MAX_MEMBER_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1024):
            raise DatasetError(f"{path}: entry {info.filename!r} unpacks {info.compress_size} bytes to "
                               f"{info.file_size} (limits: {MAX_MEMBER_BYTES} bytes, ratio {MAX_RATIO}): not a face image")


def read_image_folder_zip(path: Path, skip_bad_images: bool) -> tuple[dict[str, Split], LoadReport]:
    """Read ``train/<label>/*`` and ``test/<label>/*`` images from a zip without extracting it."""
    report = LoadReport()
    found: dict[str, dict[str, list]] = {s: {"images": [], "labels": [], "names": []} for s in SPLITS}
    labels_seen: dict[str, set[str]] = {s: set() for s in SPLITS}
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{path} is not a readable zip archive ({error})") from None
    with archive:
        check_zip_limits(path, archive.infolist())
        for info in archive.infolist():
            member = checked_member_path(info.filename)
            parts = [p for p in member.parts if p not in ("", ".")]
            if parts and (parts[0] == "__MACOSX" or parts[-1].startswith("._")):
                continue  # macOS resource forks, not images
            # Accept an optional top folder (e.g. "fer2013/train/happy/x.jpg").
            while parts and parts[0] not in SPLITS and len(parts) > 3:
                parts = parts[1:]
            if info.is_dir() or len(parts) != 3 or parts[0] not in SPLITS:
                continue
            split, label, filename = parts
            if not filename.lower().endswith(IMAGE_SUFFIXES):
                continue
            if label not in EMOTION_INDEX:
                raise DatasetError(
                    f"{path}: folder {split}/{label}/ is not one of the seven labels {list(EMOTIONS)}"
                )
            labels_seen[split].add(label)
            try:  # zipfile reads no more than the declared size, then checks the CRC
                image = decode_gray(archive.read(info), info.filename)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                raise DatasetError(f"{path}: entry {info.filename!r} is damaged ({error})") from None
            if image is None:
                if not skip_bad_images:
                    raise DatasetError(
                        f"{path}: entry {info.filename!r} is not a decodable image "
                        "(set fetch.skip_bad_images: true to skip such files)"
                    )
                report.skipped.append(info.filename)
                continue
            found[split]["images"].append(image)
            found[split]["labels"].append(EMOTION_INDEX[label])
            found[split]["names"].append(info.filename)
    for split in SPLITS:
        missing = sorted(set(EMOTIONS) - labels_seen[split])
        if missing:
            raise DatasetError(
                f"{path}: {split}/ has no folder for {missing}; expected {split}/<label>/ for each of {list(EMOTIONS)}"
            )
    return {s: _to_split(found[s]) for s in SPLITS}, report


def read_fer2013_csv(path: Path, skip_bad_images: bool) -> tuple[dict[str, Split], LoadReport]:
    """Read the original ``fer2013.csv`` (emotion codes in its own order, 48x48 pixel strings)."""
    report = LoadReport()
    found: dict[str, dict[str, list]] = {s: {"images": [], "labels": [], "names": []} for s in SPLITS}
    with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM, as read_fer2013 does
        reader = csv.DictReader(f)
        expected = {"emotion", "pixels", "Usage"}
        if reader.fieldnames is None or not expected <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected CSV columns {sorted(expected)}, found {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            where = f"{path.name}:{row_number}"
            split = CSV_USAGE_TO_SPLIT.get(row["Usage"])
            if split is None:
                report.ignored_rows[row["Usage"]] += 1
                continue
            try:
                code = int(row["emotion"])
                label = CSV_CODE_TO_INDEX[code]
            except (KeyError, ValueError):
                raise DatasetError(f"{where}: emotion {row['emotion']!r} is not a code 0-6") from None
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.int64)
                if pixels.size != FACE_SIZE * FACE_SIZE or pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError
            except ValueError:
                if not skip_bad_images:
                    raise DatasetError(
                        f"{where}: pixels must be {FACE_SIZE * FACE_SIZE} integers 0-255 "
                        "(set fetch.skip_bad_images: true to skip such rows)"
                    ) from None
                report.skipped.append(where)
                continue
            found[split]["images"].append(pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE))
            found[split]["labels"].append(label)
            found[split]["names"].append(where)
    for split in SPLITS:
        present = set(found[split]["labels"])
        missing = [EMOTIONS[i] for i in range(len(EMOTIONS)) if i not in present]
        if missing:
            raise DatasetError(f"{path}: the {split} rows have no images of {missing}")
    return {s: _to_split(found[s]) for s in SPLITS}, report


def read_fer2013(path: str | Path, skip_bad_images: bool = False) -> tuple[dict[str, Split], LoadReport]:
    """Read FER2013 from a zip of image folders or from fer2013.csv, by file content."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return read_image_folder_zip(path, skip_bad_images)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.lstrip(b"\xef\xbb\xbf").startswith(b"emotion"):
        return read_fer2013_csv(path, skip_bad_images)
    raise DatasetError(
        f"{path} is neither a zip of train/<label>/ and test/<label>/ images nor fer2013.csv "
        "(first line 'emotion,pixels,Usage')"
    )


def _to_split(columns: dict[str, list]) -> Split:
    images = np.stack(columns["images"]) if columns["images"] else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return Split(images, np.asarray(columns["labels"], dtype=np.int64), np.asarray(columns["names"], dtype=str))


def save_split(split: Split, path: str | Path) -> None:
    """Write a split atomically (temporary file beside it, then rename)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, images=split.images, labels=split.labels, names=split.names)


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no split file at {path}: run the earlier DVC stages first (dvc repro)")
    with np.load(path) as data:
        return Split(data["images"], data["labels"], data["names"])


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    return {name: int(counts[i]) for i, name in enumerate(EMOTIONS)}
