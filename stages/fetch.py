"""DVC stage `fetch`: read FER2013 (zip of image folders or fer2013.csv) into normalised arrays.

Outputs data/fer2013/{train,test}.npz and data/fer2013/manifest.json.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from tqdm import tqdm

from emotion_recognition.data import DatasetError, class_counts, read_fer2013, save_split, sha256_file
from emotion_recognition.params import load_params
from emotion_recognition.stage_io import atomic_path, run_stage, write_json

OUT_DIR = Path("data/fer2013")
DOWNLOAD_DIR = Path("data/download")
HOW_TO_GET = (
    "Get FER2013 from Kaggle (https://www.kaggle.com/datasets/msambare/fer2013, the zip with "
    "train/ and test/ folders) or the original fer2013.csv, put it at data/fer2013.zip (or "
    "data/fer2013.csv) and set data.source in params.yaml to that path or to an http(s) URL."
)


def download(url: str, target_dir: Path = DOWNLOAD_DIR) -> Path:
    """Download ``url`` with a progress bar; the file appears only once complete."""
    target = target_dir / (Path(url.split("?")[0]).name or "fer2013.zip")
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as error:
            raise DatasetError(f"could not download data.source {url}: {error}. {HOW_TO_GET}") from None
    return target


def resolve_source(source: str) -> Path:
    if source.startswith(("http://", "https://")):
        return download(source)
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"data.source {source!r}: no file at {path.resolve()}. {HOW_TO_GET}")
    return path


def fetch(source: str, expected_sha256: str | None, skip_bad_images: bool, out_dir: Path = OUT_DIR) -> dict:
    path = resolve_source(source)
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise DatasetError(f"{path}: sha256 is {digest}, but data.sha256 expects {expected_sha256}")
    splits, report = read_fer2013(path, skip_bad_images=skip_bad_images)
    manifest = {
        "source": source,
        "sha256": digest,
        "format": "csv" if path.suffix.lower() == ".csv" else "image-folder zip",
        "counts": {name: class_counts(split.labels) for name, split in splits.items()},
        "totals": {name: len(split) for name, split in splits.items()},
        "skipped_bad_images": len(report.skipped),
        "skipped_examples": report.skipped[:20],
        "ignored_csv_rows": dict(report.ignored_rows),
    }
    for name, split in splits.items():
        save_split(split, out_dir / f"{name}.npz")
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def main() -> None:
    params = load_params()
    manifest = fetch(params.data.source, params.data.sha256, params.fetch.skip_bad_images)
    print(f"fetch: {manifest['totals']} images, {manifest['skipped_bad_images']} skipped, sha256 {manifest['sha256'][:12]}")


if __name__ == "__main__":
    run_stage(main)
