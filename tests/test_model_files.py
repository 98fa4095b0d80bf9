"""Which model file a path (or none: the bundled model) resolves to, and the errors when there is none."""

from __future__ import annotations

import pytest

from testkit import tiny_model_file  # noqa: F401


def test_model_files(tmp_path, monkeypatch, tiny_model_file):  # noqa: F811
    from emotion_recognition import model_files

    monkeypatch.setattr(model_files, "BUNDLED_MODEL", tmp_path / "default_model" / "model.keras")
    with pytest.raises(model_files.ModelNotFoundError, match="no bundled default model"):
        model_files.resolve_model_file(None)
    with pytest.raises(model_files.ModelNotFoundError, match="no model file"):
        model_files.resolve_model_file(tmp_path / "missing.keras")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(model_files.ModelNotFoundError, match="not a Keras 3 model file"):
        model_files.resolve_model_file(tmp_path / "weights.h5")
    assert model_files.resolve_model_file(tiny_model_file).origin == "file"
    (tmp_path / "default_model").mkdir()
    (tmp_path / "default_model" / "model.keras").write_bytes(tiny_model_file.read_bytes())
    assert model_files.resolve_model_file(None).origin == "bundled"
