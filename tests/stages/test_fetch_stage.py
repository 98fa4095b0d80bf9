"""Stage `fetch`: FER2013 (either format) -> data/fer2013/{train,test}.npz + manifest.json."""

from pathlib import Path

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from testkit import stage_args
from emotion_recognition.pipeline.data import DatasetError, load_split
from emotion_recognition.labels import EMOTIONS

pytestmark = pytest.mark.usefixtures("project")


@pytest.fixture
def fetch(load_stage):
    return load_stage("fetch").fetch


def read_outputs(project):
    out = project / "data" / "fer2013"
    manifest = json.loads((out / "manifest.json").read_text())
    return load_split(out / "train.npz"), load_split(out / "test.npz"), manifest


def test_zip_source_gives_arrays_and_a_manifest(project, fer, load_stage):
    source = fer.write_zip(project / "inputs" / "fer2013.zip")
    load_stage("fetch").main(*stage_args("fetch"))  # params.yaml: data.source is inputs/fer2013.zip
    train, test, manifest = read_outputs(project)
    assert len(train) == len(fer.select("train")) and len(test) == len(fer.select("test"))
    np.testing.assert_array_equal(train.images, np.stack([f.pixels for f in fer.select("train")]))
    assert manifest["source"] == "inputs/fer2013.zip"
    assert manifest["format"] == "image-folder zip"
    assert manifest["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["counts"] == {"train": {e: 6 for e in EMOTIONS}, "test": {e: 3 for e in EMOTIONS}}
    assert manifest["totals"] == {"train": 42, "test": 21}
    assert manifest["skipped_bad_images"] == 0


def test_csv_source_gives_the_same_arrays_as_the_zip(project, fer, fetch):
    fetch(str(fer.write_zip(project / "inputs" / "fer2013.zip")), None, False, out_dir=project / "from_zip")
    csv_manifest = fetch(str(fer.write_csv(project / "inputs" / "fer2013.csv")), None, False, out_dir=project / "from_csv")
    assert csv_manifest["format"] == "csv"
    for split in ("train", "test"):
        from_zip = load_split(project / "from_zip" / f"{split}.npz")
        from_csv = load_split(project / "from_csv" / f"{split}.npz")
        np.testing.assert_array_equal(from_csv.images, from_zip.images)
        np.testing.assert_array_equal(from_csv.labels, from_zip.labels)


def test_sha256_is_checked(project, fer, fetch):
    source = fer.write_zip(project / "inputs" / "fer2013.zip")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    wrong = "0" * 64
    with pytest.raises(DatasetError) as error:
        fetch(str(source), wrong, False, Path("data/fer2013"))
    assert f"sha256 is {digest}, but data.sha256 expects {wrong}" in str(error.value)
    assert not (project / "data" / "fer2013").exists()
    assert fetch(str(source), digest.upper(), False, Path("data/fer2013"))["sha256"] == digest


def test_corrupt_image_is_named_or_skipped_and_counted(project, fer, fetch):
    source = fer.write_zip(project / "inputs" / "fer2013.zip",
                           extra={"train/fear/Training_bad.jpg": b"not an image", "test/fear/PublicTest_empty.jpg": b""})
    with pytest.raises(DatasetError, match=r"'train/fear/Training_bad.jpg' is not a decodable image"):
        fetch(str(source), None, False, Path("data/fer2013"))
    assert not (project / "data" / "fer2013").exists()
    manifest = fetch(str(source), None, True, Path("data/fer2013"))
    assert manifest["skipped_bad_images"] == 2
    assert manifest["skipped_examples"] == ["train/fear/Training_bad.jpg", "test/fear/PublicTest_empty.jpg"]
    assert manifest["totals"] == {"train": 42, "test": 21}
    assert json.loads((project / "data" / "fer2013" / "manifest.json").read_text()) == manifest


def test_path_traversal_zip_is_refused_and_nothing_is_written(project, fer, fetch):
    entry = "train/happy/../../../../x.jpg"
    source = fer.write_zip(project / "inputs" / "fer2013.zip", extra={entry: fer.faces[0].jpeg})
    before = set(project.parent.rglob("*"))
    with pytest.raises(DatasetError, match=rf"unsafe entry '{entry}'"):
        fetch(str(source), None, False, Path("data/fer2013"))
    assert set(project.parent.rglob("*")) == before


def test_missing_label_folder_is_named(project, fer, fetch):
    faces = [f for f in fer.faces if f.label != "disgust"]
    source = fer.write_zip(project / "inputs" / "fer2013.zip", faces)
    with pytest.raises(DatasetError, match=r"train/ has no folder for \['disgust'\]"):
        fetch(str(source), None, False, Path("data/fer2013"))


def run_fetch(project):
    return subprocess.run([sys.executable, "stages/fetch.py", *stage_args("fetch")], cwd=project, capture_output=True, text=True, timeout=120)


def test_missing_source_says_where_to_get_fer2013_and_which_param_to_set(project):
    result = run_fetch(project)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("error: data.source 'inputs/fer2013.zip': no file at ")
    assert "https://www.kaggle.com/datasets/msambare/fer2013" in message
    assert "fer2013.csv" in message and "set data.source in params.yaml" in message
    assert not (project / "data" / "fer2013").exists()


def test_invalid_params_exit_2_naming_the_field(project, set_params):
    set_params(project, fetch={"skip_bad_images": "sometimes"})
    result = run_fetch(project)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fetch.skip_bad_images" in result.stderr


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serves tmp_path/served/ on 127.0.0.1; yields the base URL."""
    import functools
    import http.server
    import threading

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_source_is_downloaded_then_read(project, fer, fetch, http_server):
    served, base = http_server
    source = fer.write_zip(served / "fer2013.zip")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    manifest = fetch(f"{base}/fer2013.zip?download=1", digest, False, Path("data/fer2013"))
    assert manifest["sha256"] == digest and manifest["totals"] == {"train": 42, "test": 21}
    downloaded = project / "data" / "download" / "fer2013.zip"
    assert downloaded.read_bytes() == source.read_bytes()
    assert [p.name for p in downloaded.parent.iterdir()] == ["fer2013.zip"]


def test_failed_download_says_where_to_get_fer2013(project, fetch, http_server):
    _, base = http_server
    with pytest.raises(DatasetError) as error:
        fetch(f"{base}/missing.zip", "0" * 64, False, Path("data/fer2013"))
    message = str(error.value)
    assert f"could not download data.source {base}/missing.zip" in message and "404" in message
    assert "kaggle.com/datasets/msambare/fer2013" in message
    assert list((project / "data" / "download").iterdir()) == []  # no partial download left


def test_a_url_source_needs_its_sha256_and_a_mismatch_leaves_no_file(project, fetch, http_server, fer):
    served, base = http_server
    fer.write_zip(served / "fer2013.zip")
    with pytest.raises(DatasetError, match="is a URL: set data.sha256"):
        fetch(f"{base}/fer2013.zip", None, False, Path("data/fer2013"))
    assert not (project / "data/download").exists()  # refused before any request
    with pytest.raises(DatasetError, match="but data.sha256 expects " + "0" * 64):
        fetch(f"{base}/fer2013.zip", "0" * 64, False, Path("data/fer2013"))
    assert list((project / "data/download").iterdir()) == []


def test_an_endless_download_is_cut_at_the_cap(project, load_stage, http_server, monkeypatch):
    stage = load_stage("fetch")
    served, base = http_server
    (served / "huge.zip").write_bytes(bytes(3 << 20))
    monkeypatch.setattr(stage, "MAX_TOTAL_BYTES", 1 << 20)
    with pytest.raises(DatasetError, match=f"more than {1 << 20} bytes"):
        stage.fetch(f"{base}/huge.zip", "0" * 64, False, Path("data/fer2013"))
    assert list((project / "data/download").iterdir()) == []
