"""Reading FER2013 in both formats, refusing unsafe or broken archives, and the split files."""

import hashlib
import zipfile

import cv2
import numpy as np
import pytest

from emotion_recognition.pipeline.data import DatasetError, Split, checked_member_path, class_counts, load_split, read_fer2013, save_split
from emotion_recognition.model_files import sha256_file
from emotion_recognition.labels import EMOTION_INDEX, EMOTIONS


def expected_split(faces):
    return (
        np.stack([f.pixels for f in faces]),
        np.array([EMOTION_INDEX[f.label] for f in faces]),
    )


def test_image_folder_zip_gives_every_image_with_its_folder_label(fer, fer_zip):
    splits, report = read_fer2013(fer_zip)
    assert set(splits) == {"train", "test"}
    for name, split in splits.items():
        images, labels = expected_split(fer.select(name))
        assert split.images.dtype == np.uint8 and split.images.shape == images.shape
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.images, images)
        np.testing.assert_array_equal(split.labels, labels)
        assert list(split.names) == [f.entry for f in fer.select(name)]
    assert class_counts(splits["train"].labels) == {e: 6 for e in EMOTIONS}
    assert class_counts(splits["test"].labels) == {e: 3 for e in EMOTIONS}
    assert report.skipped == []


def test_csv_and_zip_give_the_same_arrays_and_labels(fer_zip, fer_csv):
    from_zip, _ = read_fer2013(fer_zip)
    from_csv, report = read_fer2013(fer_csv)
    for name in ("train", "test"):
        np.testing.assert_array_equal(from_csv[name].images, from_zip[name].images)
        np.testing.assert_array_equal(from_csv[name].labels, from_zip[name].labels)
    assert from_csv["train"].names[0] == "fer2013.csv:2"
    assert dict(report.ignored_rows) == {}


def test_csv_codes_are_mapped_to_the_label_order(fer, tmp_path):
    # One row per CSV code; e.g. code 4 is sad and code 6 is neutral in fer2013.csv.
    faces = [fer.select("train", label)[0] for label in EMOTIONS] + [fer.select("test", label)[0] for label in EMOTIONS]
    rows = tmp_path / "fer2013.csv"
    fer.write_csv(rows, faces)
    text = rows.read_text().splitlines()
    assert text[0] == "emotion,pixels,Usage"
    codes = [int(line.split(",")[0]) for line in text[1:8]]
    assert codes == [0, 1, 2, 3, 6, 4, 5]  # angry disgust fear happy neutral sad surprise
    splits, _ = read_fer2013(rows)
    assert [EMOTIONS[i] for i in splits["train"].labels] == list(EMOTIONS)


def test_csv_private_test_rows_are_ignored_and_counted(fer, tmp_path):
    private = [(3, " ".join(["7"] * 2304), "PrivateTest")] * 2
    path = fer.write_csv(tmp_path / "fer2013.csv", extra_rows=private)
    splits, report = read_fer2013(path)
    assert dict(report.ignored_rows) == {"PrivateTest": 2}
    assert len(splits["train"]) + len(splits["test"]) == len(fer.faces)


def test_csv_with_a_byte_order_mark_is_read(fer, fer_csv, tmp_path):
    with_bom = fer.write_csv(tmp_path / "bom.csv", encoding="utf-8-sig")
    assert with_bom.read_bytes().startswith(b"\xef\xbb\xbf")
    splits, _ = read_fer2013(with_bom)
    np.testing.assert_array_equal(splits["test"].labels, read_fer2013(fer_csv)[0]["test"].labels)


def test_zip_with_a_top_folder_is_accepted(fer, tmp_path):
    path = fer.write_zip(tmp_path / "nested.zip", top_folder="fer2013/")
    splits, _ = read_fer2013(path)
    assert len(splits["train"]) == len(fer.select("train"))


def test_larger_images_are_resized_to_48x48(fer, tmp_path):
    big = cv2.imencode(".png", np.full((96, 96), 200, np.uint8))[1].tobytes()
    path = fer.write_zip(tmp_path / "big.zip", extra={"train/happy/big.png": big})
    splits, _ = read_fer2013(path)
    index = list(splits["train"].names).index("train/happy/big.png")
    np.testing.assert_array_equal(splits["train"].images[index], np.full((48, 48), 200, np.uint8))


def test_files_other_than_images_are_ignored(fer, tmp_path):
    path = fer.write_zip(tmp_path / "x.zip", extra={"README.txt": b"hi", "train/happy/notes.txt": b"x"})
    splits, _ = read_fer2013(path)
    assert len(splits["train"]) == len(fer.select("train"))


# %% Unsafe archives


@pytest.mark.parametrize(
    "entry",
    ["../../x.jpg", "train/happy/../../../../x", "train/happy/../../../../x.jpg", "/tmp/x.jpg",
     "..\\..\\x.jpg", "C:/x.jpg"],
)
def test_path_traversal_entry_is_refused_by_name_and_nothing_is_written(fer, tmp_path, entry):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    archive = fer.write_zip(work / "evil.zip", extra={entry: fer.faces[0].jpeg})
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(DatasetError) as error:
        read_fer2013(archive)
    assert repr(entry) in str(error.value)
    assert "unsafe entry" in str(error.value)
    assert {p for p in tmp_path.rglob("*")} == before
    assert not list(tmp_path.rglob("x*"))


@pytest.mark.parametrize("entry", ["train/happy/a.jpg", "fer2013/train/happy/a.jpg", "./train/happy/a.jpg"])
def test_ordinary_entries_pass_the_path_check(entry):
    assert ".." not in checked_member_path(entry).parts


# %% Broken data


@pytest.mark.parametrize("bad_bytes", [b"this is not a jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF", b""],
                         ids=["text", "truncated-jpeg", "empty-file"])
def test_undecodable_image_is_named_in_the_error(fer, tmp_path, bad_bytes):
    path = fer.write_zip(tmp_path / "bad.zip", extra={"train/sad/Training_broken.jpg": bad_bytes})
    with pytest.raises(DatasetError) as error:
        read_fer2013(path)
    assert "'train/sad/Training_broken.jpg'" in str(error.value)
    assert "fetch.skip_bad_images" in str(error.value)


@pytest.mark.parametrize("bad_bytes", [b"this is not a jpeg", b""], ids=["text", "empty-file"])
def test_undecodable_image_is_skipped_and_reported_when_asked(fer, tmp_path, bad_bytes):
    path = fer.write_zip(tmp_path / "bad.zip", extra={"train/sad/Training_broken.jpg": bad_bytes})
    splits, report = read_fer2013(path, skip_bad_images=True)
    assert report.skipped == ["train/sad/Training_broken.jpg"]
    assert len(splits["train"]) == len(fer.select("train"))
    assert "train/sad/Training_broken.jpg" not in set(splits["train"].names)


def test_bad_csv_pixels_are_named_by_row_or_skipped(fer, tmp_path):
    rows = [(0, "1 2 3", "Training"), (0, " ".join(["300"] * 2304), "Training")]
    path = fer.write_csv(tmp_path / "fer2013.csv", extra_rows=rows)
    first_bad_row = len(fer.faces) + 2
    with pytest.raises(DatasetError, match=rf"fer2013.csv:{first_bad_row}: pixels must be 2304 integers 0-255"):
        read_fer2013(path)
    _, report = read_fer2013(path, skip_bad_images=True)
    assert report.skipped == [f"fer2013.csv:{first_bad_row}", f"fer2013.csv:{first_bad_row + 1}"]


def test_bad_csv_emotion_code_is_named_by_row(fer, tmp_path):
    path = fer.write_csv(tmp_path / "fer2013.csv", extra_rows=[(7, " ".join(["0"] * 2304), "Training")])
    with pytest.raises(DatasetError, match=rf"fer2013.csv:{len(fer.faces) + 2}: emotion '7' is not a code 0-6"):
        read_fer2013(path)


def test_csv_without_the_expected_columns_is_refused(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,image\n0,1 2 3\n")
    with pytest.raises(DatasetError, match=r"expected CSV columns \['Usage', 'emotion', 'pixels'\]"):
        read_fer2013(path)


def test_missing_label_folders_are_named(fer, tmp_path):
    faces = [f for f in fer.faces if not (f.split == "test" and f.label in ("disgust", "surprise"))]
    path = fer.write_zip(tmp_path / "partial.zip", faces)
    with pytest.raises(DatasetError) as error:
        read_fer2013(path)
    message = str(error.value)
    assert "test/ has no folder for ['disgust', 'surprise']" in message


def test_missing_split_is_named(fer, tmp_path):
    path = fer.write_zip(tmp_path / "train-only.zip", fer.select("train"))
    with pytest.raises(DatasetError, match=r"test/ has no folder for \['angry', 'disgust'"):
        read_fer2013(path)


def test_missing_label_in_csv_is_named(fer, tmp_path):
    faces = [f for f in fer.faces if not (f.split == "train" and f.label == "neutral")]
    path = fer.write_csv(tmp_path / "fer2013.csv", faces)
    with pytest.raises(DatasetError, match=r"the train rows have no images of \['neutral'\]"):
        read_fer2013(path)


def test_unknown_label_folder_is_refused(fer, tmp_path):
    path = fer.write_zip(tmp_path / "x.zip", extra={"train/contempt/a.jpg": fer.faces[0].jpeg})
    with pytest.raises(DatasetError, match=r"folder train/contempt/ is not one of the seven labels"):
        read_fer2013(path)


def test_a_file_in_neither_format_is_refused(tmp_path):
    path = tmp_path / "fer2013.zip"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DatasetError, match="neither a zip of train/<label>/ and test/<label>/ images nor fer2013.csv"):
        read_fer2013(path)


# %% Split files


def test_split_files_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    split = Split(rng.integers(0, 256, (5, 48, 48), dtype=np.uint8), np.array([0, 6, 3, 3, 1]),
                  np.array(["a.jpg", "b.jpg", "c", "d", "e"]))
    save_split(split, tmp_path / "s" / "train.npz")
    loaded = load_split(tmp_path / "s" / "train.npz")
    np.testing.assert_array_equal(loaded.images, split.images)
    np.testing.assert_array_equal(loaded.labels, split.labels)
    assert list(loaded.names) == list(split.names)
    assert len(loaded.subset(np.array([1, 3]))) == 2


def test_missing_split_file_says_to_run_the_earlier_stages(tmp_path):
    with pytest.raises(DatasetError, match=r"no split file at .*train.npz: run the earlier DVC stages"):
        load_split(tmp_path / "train.npz")


def test_sha256_of_a_file(tmp_path):
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3_000_000)
    path.write_bytes(data)
    assert sha256_file(path, chunk=1 << 16) == hashlib.sha256(data).hexdigest()


def test_zip_readers_never_extract(fer, fer_zip, tmp_path):
    before = {p for p in tmp_path.rglob("*")}
    read_fer2013(fer_zip)
    assert {p for p in tmp_path.rglob("*")} == before
    assert zipfile.is_zipfile(fer_zip)


def test_macos_resource_forks_in_a_zip_are_ignored(fer, tmp_path):
    junk = b"\x00\x05\x16\x07 not an image"
    path = fer.write_zip(tmp_path / "mac.zip", extra={"__MACOSX/train/happy/._a.jpg": junk, "train/happy/._b.jpg": junk})
    splits, report = read_fer2013(path)
    assert len(splits["train"]) == len(fer.select("train")) and report.skipped == []
