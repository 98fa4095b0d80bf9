"""DVC stage `fetch`: read FER2013 (zip of image folders or fer2013.csv) into normalised arrays.

`python stages/fetch.py OUT_DIR` (dvc.yaml: data/fer2013) writes OUT_DIR/{train,test}.npz and OUT_DIR/manifest.json.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from tqdm import tqdm

from emotion_recognition.pipeline.data import MAX_TOTAL_BYTES, DatasetError, class_counts, read_fer2013, save_split
from emotion_recognition.model_files import sha256_file
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.pipeline.stage_io import atomic_path, run_stage, write_json

DOWNLOAD_DIR = Path("data/download")
HOW_TO_GET = (
    "Get FER2013 from Kaggle (https://www.kaggle.com/datasets/msambare/fer2013, the zip with "
    "train/ and test/ folders) or the original fer2013.csv, put it at data/fer2013.zip (or "
    "data/fer2013.csv) and set data.source in params.yaml to that path, or to an http(s) URL with its data.sha256."
)


def download(url: str, expected_sha256: str, target_dir: Path = DOWNLOAD_DIR) -> Path:
    """Download ``url`` with a progress bar; the file appears only once complete, at most
    MAX_TOTAL_BYTES long and with the expected sha256 (which is what makes plain http safe)."""
    target = target_dir / (Path(url.split("?")[0]).name or "fer2013.zip")
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                    while chunk := response.read(1 << 20):
                        if bar.n + len(chunk) > MAX_TOTAL_BYTES:
                            raise DatasetError(f"{url}: more than {MAX_TOTAL_BYTES} bytes, not FER2013")
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        except (OSError, ValueError) as error:  # ValueError: a malformed URL or Content-Length
            raise DatasetError(f"could not download data.source {url}: {error}. {HOW_TO_GET}") from None
        if digest.hexdigest() != expected_sha256.lower():
            raise DatasetError(f"{url}: sha256 is {digest.hexdigest()}, but data.sha256 expects {expected_sha256}")
    return target


def resolve_source(source: str, expected_sha256: str | None) -> Path:
    if source.startswith(("http://", "https://")):
        if not expected_sha256:
            raise DatasetError(f"data.source {source} is a URL: set data.sha256 to the file's sha256 (sha256sum FILE), "
                               "so a tampered or truncated download is refused")
        return download(source, expected_sha256)
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"data.source {source!r}: no file at {path.resolve()}. {HOW_TO_GET}")
    return path


def fetch(source: str, expected_sha256: str | None, skip_bad_images: bool, out_dir: Path) -> dict:
    path = resolve_source(source, expected_sha256)
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


def main(out_dir: str) -> None:
    params = load_params()
    manifest = fetch(params.data.source, params.data.sha256, params.fetch.skip_bad_images, Path(out_dir))
    print(f"fetch: {manifest['totals']} images, {manifest['skipped_bad_images']} skipped, sha256 {manifest['sha256'][:12]}")


if __name__ == "__main__":
    run_stage(main)
