"""The classifier's forward pass: (N, 48, 48, 1) float32 faces -> (N, 7) probabilities.

The Keras file is the model (training makes it, the registry holds it). ``runtime="openvino"``
(the default; docs/decisions.md) runs an OpenVINO copy made from it by ``convert`` and keyed by
the Keras file's sha256: INT8 where validation faces exist to calibrate it (bundle, evaluate
stage: ``openvino/`` beside the file, in the MLflow run and the BentoML model), else fp32, made
on first use into the user cache (``$EMOTION_CACHE_DIR``, else ``~/.cache/emotion-recognition``).
A copy is written only after it matched Keras on faces (the record is ``<sha>.json`` beside it).
Keras is the fallback, with one log line saying why, when OpenVINO is missing or a copy fails.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np

from emotion_recognition.data import sha256_file
from emotion_recognition.preprocessing import FACE_SIZE

log = logging.getLogger(__name__)

Runtime = Literal["openvino", "keras"]
RUNTIMES: tuple[str, ...] = Runtime.__args__
# max |probability difference| against Keras for a converted copy; fp32 copies differ by < 1e-6
TOLERANCE = 1e-4
# INT8 copies: least share of faces whose top emotion is Keras's (the bundled model: see docs/decisions.md)
INT8_AGREEMENT = 0.95
CALIBRATION_FACES = 1000  # validation faces (with their mirrors) INT8 is calibrated on


@dataclass
class Classifier:
    """A forward pass with the model contract's shapes (for ``check_model_contract``)."""
    predict: Callable[[np.ndarray], np.ndarray]
    runtime: str
    input_shape: tuple
    output_shape: tuple

    @classmethod
    def from_keras(cls, model: Any) -> "Classifier":
        return cls(lambda batch: np.asarray(model.predict_on_batch(batch)), "keras", model.input_shape, model.output_shape)


def probe_faces(count: int = 64, seed: int = 0) -> np.ndarray:
    """Deterministic smooth 48x48 images (0-255) to check a copy on when no real faces are at hand:
    any conversion error (layout, scaling, fp16 weights) shows on them."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (count, 6, 6)).astype(np.float32)
    return np.stack([cv2.resize(c, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_CUBIC) for c in coarse]).clip(0, 255).astype(np.uint8)


CACHE_DIR_VARIABLE = "EMOTION_CACHE_DIR"  # read by the library itself, so also by the service


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or Path.home() / ".cache" / "emotion-recognition") / "openvino"


def convert(keras_model: Any, dest_dir: str | Path, sha256: str, faces: np.ndarray, source: str,
            calibration: np.ndarray | None = None) -> Path:
    """Write ``dest_dir/<sha256>.xml`` (+ .bin, + .json: the check) from ``keras_model``: fp32,
    or INT8 (NNCF) calibrated on ``calibration`` faces and their mirrors when given. Checked on
    ``faces`` ((N, 48, 48) uint8, described by ``source``): fp32 within TOLERANCE of Keras, INT8
    the same top emotion as Keras for INT8_AGREEMENT of them; ValueError (nothing written) if not."""
    import openvino as ov

    batch = np.asarray(faces, np.float32)[..., np.newaxis]
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=dest_dir) as tmp:
        keras_model.export(f"{tmp}/saved", format="tf_saved_model", verbose=False)
        ov_model = ov.convert_model(f"{tmp}/saved", input=[(-1, FACE_SIZE, FACE_SIZE, 1)])
        reference = keras_model.predict_on_batch(batch)
        difference = float(np.abs(_compile(ov_model, 0)(batch) - reference).max())
        if not difference <= TOLERANCE:
            raise ValueError(f"the OpenVINO copy differs from Keras by {difference:.2g} (> {TOLERANCE}) on {source}")
        record = {"keras_sha256": sha256, "precision": "fp32", "max_abs_difference": difference, "tolerance": TOLERANCE}
        if calibration is not None:
            import nncf

            views = np.asarray(calibration, np.float32)[..., np.newaxis]
            views = np.concatenate([views, views[:, :, ::-1]])  # the service classifies mirrors too
            ov_model = nncf.quantize(ov_model, nncf.Dataset(list(views), lambda face: face[None]), subset_size=len(views))
            agreement = float((_compile(ov_model, 0)(batch).argmax(1) == reference.argmax(1)).mean())
            if not agreement >= INT8_AGREEMENT:
                raise ValueError(f"the INT8 copy agrees with Keras on {agreement:.1%} of {source} (< {INT8_AGREEMENT:.0%})")
            record.update(precision="int8", calibration_faces=len(calibration), top1_agreement=agreement,
                          min_top1_agreement=INT8_AGREEMENT)
        ov.save_model(ov_model, f"{tmp}/{sha256}.xml", compress_to_fp16=False)  # fp16 weights change outputs
        record.update(checked_on=f"{len(batch)} {source}", openvino=ov.__version__)
        Path(f"{tmp}/{sha256}.json").write_text(json.dumps(record, indent=1))
        for suffix in (".bin", ".json", ".xml"):  # .xml last: its presence means the copy is complete
            os.replace(f"{tmp}/{sha256}{suffix}", Path(dest_dir) / f"{sha256}{suffix}")
    log.info("converted the model to OpenVINO %s (%s/%s.xml), checked on %d %s", record["precision"], dest_dir, sha256,
             len(batch), source)
    return Path(dest_dir) / f"{sha256}.xml"


def _compile(ov_model: Any, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """One stream, fp32 arithmetic (not the bf16 that AMX CPUs default to), ``threads`` (0: every core)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    return lambda batch: np.array(compiled(np.ascontiguousarray(batch, np.float32))[0])


def openvino_copy(path: Path) -> Path:
    """The checked OpenVINO copy of the Keras file at ``path``: beside it, else in the user cache,
    else made now (checked on ``probe_faces``) into the user cache."""
    sha256 = sha256_file(path)
    for folder in (path.parent / "openvino", cache_dir()):
        if (folder / f"{sha256}.xml").is_file():
            return folder / f"{sha256}.xml"
    from emotion_recognition.model import load_model

    return convert(load_model(path), cache_dir(), sha256, probe_faces(), "probe faces (runtime.probe_faces)")


def load_classifier(path: str | Path, runtime: Runtime = "openvino", threads: int = 0) -> Classifier:
    """The forward pass of the Keras file at ``path`` on ``runtime``; Keras, with one warning,
    when OpenVINO is not installed or its copy cannot be made."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        try:
            import openvino as ov

            ov_model = ov.Core().read_model(openvino_copy(Path(path)))
            shape = lambda port: (None, *[d.get_length() for d in list(port.get_partial_shape())[1:]])  # noqa: E731
            return Classifier(_compile(ov_model, threads), "openvino", shape(ov_model.inputs[0]), shape(ov_model.outputs[0]))
        except ImportError:
            log.warning("runtime openvino: the openvino package is not installed, using Keras (pip install openvino)")
        except (ValueError, RuntimeError, OSError) as error:
            log.warning("runtime openvino: no usable OpenVINO copy of %s (%s), using Keras", path, error)
    from emotion_recognition.model import load_model

    return Classifier.from_keras(load_model(path))
