"""The classifier's forward pass: (N, 48, 48, 1) float32 faces -> (N, 7) probabilities.

The Keras file is the model (training makes it, the registry holds it). ``runtime="openvino"``
(the default; docs/decisions.md) runs an OpenVINO copy made from it by ``convert`` and keyed by
the Keras file's sha256: INT8 where validation faces exist to calibrate it (bundle, evaluate
stage: ``openvino/`` beside the file, in the MLflow run and the BentoML model), else fp32, made
on first use into the user cache (``$EMOTION_CACHE_DIR``, else ``~/.cache/emotion-recognition``).
A copy is written only after it matched Keras on faces (the record is ``<sha>.json`` beside it).
MLflow saves the model it logs to a file of its own: ``install_copy`` finds the run's copy by the
weights' hash its record holds.
Keras is the fallback, with one log line saying why, when OpenVINO is missing or a copy fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np

from emotion_recognition.model_files import sha256_file
from emotion_recognition.preprocessing import FACE_SIZE, to_model_batch

log = logging.getLogger(__name__)

Runtime = Literal["openvino", "keras"]
RUNTIMES: tuple[str, ...] = Runtime.__args__
# max |probability difference| against Keras for a converted copy; fp32 copies differ by < 1e-6
TOLERANCE = 1e-4
# INT8 copies: least share of faces whose top emotion is Keras's (the bundled model: see docs/decisions.md)
INT8_AGREEMENT = 0.95
CALIBRATION_FACES = 1000  # validation faces (with their mirrors) INT8 is calibrated on
DEFAULT_MODEL_BATCH = 256  # views per forward pass: bounded memory whatever the number of faces


@dataclass
class Classifier:
    """A forward pass with the model contract's shapes (for ``check_model_contract``)."""
    predict: Callable[[np.ndarray], np.ndarray]
    runtime: str
    input_shape: tuple
    output_shape: tuple

    @classmethod
    def from_keras(cls, model: Any) -> "Classifier":
        """A tf.function traced once for any batch size: ``predict_on_batch`` costs several ms more per call."""
        import tensorflow as tf

        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                              input_signature=[tf.TensorSpec((None, FACE_SIZE, FACE_SIZE, 1), tf.float32)])
        return cls(lambda batch: forward(tf.convert_to_tensor(batch, tf.float32)).numpy(), "keras", model.input_shape,
                   model.output_shape)

    @classmethod
    def from_openvino(cls, xml: str | Path, threads: int = 0) -> "Classifier":
        import openvino as ov

        ov_model = ov.Core().read_model(xml)
        shape = lambda port: (None, *[d.get_length() for d in list(port.get_partial_shape())[1:]])  # noqa: E731
        return cls(_compile(ov_model, threads), "openvino", shape(ov_model.inputs[0]), shape(ov_model.outputs[0]))

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities, DEFAULT_MODEL_BATCH faces per call."""
        return in_chunks(lambda batch: self.predict(to_model_batch(batch)), faces)


def in_chunks(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """``predict`` on DEFAULT_MODEL_BATCH faces at a time (3,589 test faces at once: ~1 GB of first-layer output)."""
    return np.concatenate([predict(batch[i : i + DEFAULT_MODEL_BATCH]) for i in range(0, len(batch), DEFAULT_MODEL_BATCH)])


def weights_sha256(keras_model: Any) -> str:
    """The same for every file the model is saved to (unlike the file's own sha256)."""
    digest = hashlib.sha256()
    for weight in keras_model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


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
        reference = in_chunks(Classifier.from_keras(keras_model).predict, batch)
        difference = float(np.abs(in_chunks(_compile(ov_model, 0), batch) - reference).max())
        if not difference <= TOLERANCE:
            raise ValueError(f"the OpenVINO copy differs from Keras by {difference:.2g} (> {TOLERANCE}) on {source}")
        record = {"keras_sha256": sha256, "weights_sha256": weights_sha256(keras_model), "precision": "fp32",
                  "max_abs_difference": difference, "tolerance": TOLERANCE}
        if calibration is not None:
            import nncf

            views = np.asarray(calibration, np.float32)[..., np.newaxis]
            views = np.concatenate([views, views[:, :, ::-1]])  # the service classifies mirrors too
            ov_model = nncf.quantize(ov_model, nncf.Dataset(list(views), lambda face: face[None]), subset_size=len(views))
            agreement = float((in_chunks(_compile(ov_model, 0), batch).argmax(1) == reference.argmax(1)).mean())
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


def install_copy(folder: Path, keras_model: Any, sha256: str, dest: Path) -> bool:
    """Copy into ``dest``, as ``<sha256>.*``, the copy in ``folder`` made from ``keras_model`` saved
    as the file with ``sha256``: the one keyed by it, else one whose record has the model's weights
    (re-keyed, its record saying so); False if ``folder`` has neither (e.g. the copy of another model)."""
    weights = weights_sha256(keras_model)
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        if sha256 != record.get("keras_sha256") and weights != record.get("weights_sha256"):
            continue
        if record["keras_sha256"] != sha256:
            record.update(keras_sha256=sha256, rekeyed_from=record["keras_sha256"])
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path.with_suffix(".bin"), Path(dest) / f"{sha256}.bin")
        (Path(dest) / f"{sha256}.json").write_text(json.dumps(record, indent=1))
        shutil.copyfile(path.with_suffix(".xml"), Path(dest) / f"{sha256}.xml")  # last: the copy is complete
        return True
    return False


def openvino_copy(path: Path) -> Path:
    """The checked OpenVINO copy of the Keras file at ``path``: beside it, else in the user cache,
    else made now (checked on ``probe_faces``) into the user cache."""
    sha256 = sha256_file(path)
    for folder in (path.parent / "openvino", cache_dir()):
        if (folder / f"{sha256}.xml").is_file():
            return folder / f"{sha256}.xml"
    from emotion_recognition.model_files import load_model

    return convert(load_model(path), cache_dir(), sha256, probe_faces(), "probe faces (runtime.probe_faces)")


def load_classifier(path: str | Path, runtime: Runtime = "openvino", threads: int = 0) -> Classifier:
    """The forward pass of the Keras file at ``path`` on ``runtime``; Keras, with one warning,
    when OpenVINO is not installed or its copy cannot be made."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        try:
            return Classifier.from_openvino(openvino_copy(Path(path)), threads)
        except ImportError:
            log.warning("runtime openvino: the openvino package is not installed, using Keras (pip install openvino)")
        except (ValueError, RuntimeError, OSError) as error:
            log.warning("runtime openvino: no usable OpenVINO copy of %s (%s), using Keras", path, error)
    from emotion_recognition.model_files import load_model

    return Classifier.from_keras(load_model(path))
