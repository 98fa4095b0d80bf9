"""BentoML service: faces and their emotions in photos, video frames and video files.

Serve from the repository root (the root bentofile.yaml names this service): ``bentoml serve``
serves the model imported into the BentoML store, else the bundled one. README's API table lists
the endpoints; each API's docstring below is its OpenAPI description. Every API sends its faces to
``EmotionClassifier`` (the model's own service, ``bentoml.depends``), whose batcher merges the faces
of concurrent requests. Bad input gets a 4xx JSON error naming the problem. Settings are
``EMOTION_*`` variables, defined and checked once in serving/settings.py (docs/serving.md).
"""

import asyncio
import functools
import logging
import json
import os
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal

import serving  # noqa: F401  (BENTOML_DO_NOT_TRACK before bentoml is imported)

import anyio
import bentoml
import aiohttp
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import AfterValidator, Field
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles


from emotion_recognition.face_tracking import MAX_SMOOTH_FRAMES, FaceTracker
from emotion_recognition.detection import describe_detector, locate_faces
from emotion_recognition.inference import FaceResult, classify_located, stack_faces
from emotion_recognition.labels import EMOTIONS, NUM_CLASSES, TRANSLATIONS
from emotion_recognition.media import (
    ImageLimits,
    InputError,
    VideoLimits,
    check_size,
    chunks,
    decode_image,
    encode_image,
    open_image_header,
    video_frames,
)
from emotion_recognition.preprocessing import FACE_SIZE
from emotion_recognition.timeline import timeline_frame, write_timeline_csv
from emotion_recognition.tta import from_preset
from emotion_recognition.model_files import bundled_model_path
from serving import forms
from serving.limits import CLASSIFY_MAX_FACES, RequestGuard, bound_header_time, bound_metric_labels, check_faces
from serving.model_store import MODEL_FILE, NoModelError, find_stored_model, model_tag
from serving.settings import ServingSettings, SettingsError, load_settings

logger = logging.getLogger("bentoml.service.emotion")
STATIC_DIR = Path(__file__).resolve().parent / "static"


def _settings_or_exit() -> ServingSettings:
    """The EMOTION_* settings; a bad value stops the server with the variable named, no traceback."""
    try:
        return load_settings()
    except SettingsError as error:
        print(f"\nerror: {error}\n", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


SETTINGS = _settings_or_exit()  # read once per process; everything below takes its values from here
MODEL_TAG = model_tag(SETTINGS)
forms.install(SETTINGS.max_frames_per_request)  # malformed form bodies: 400 naming the problem, not BentoML's 500


# The video APIs' frame step, and the frames a face's probabilities are averaged over (1: no smoothing).
Every = Annotated[int, Field(ge=1)]
SmoothFrames = Annotated[int, Field(ge=1, le=MAX_SMOOTH_FRAMES)]


class BadInput(BentoMLException):
    """A 4xx answer; BentoML turns it into JSON ``[{"error": message}]`` with this status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message, error_code=HTTPStatus(status))


# The service's own /classify calls send at most BATCHER_CHUNK faces each, so that they merge with
# other requests' faces, and at most BATCHER_CALLS of them at once per request, so that a request
# with thousands of faces does not fill the batcher's queue ahead of everyone else.
BATCHER_CHUNK = 32
BATCHER_CALLS = 2


def _page_vocabulary(request):
    """GET /ui/vocabulary.json: what the page shows, from its one definition (label order and
    translations, box colours, the upload limits), so app.js holds no copy of them."""
    from starlette.responses import JSONResponse

    from emotion_recognition.drawing import COLOURS

    return JSONResponse({"labels": list(EMOTIONS), "translations": TRANSLATIONS,
                         "colours": {e: "rgb({},{},{})".format(*COLOURS[e]) for e in EMOTIONS},
                         "limits": {k: getattr(SETTINGS, k) for k in ("max_image_bytes", "max_video_bytes")}})


# The web page: /ui/ serves serving/static (index.html + app.js); / stays BentoML's API docs.
ui_app = Starlette(
    routes=[
        Route("/", lambda request: RedirectResponse(url=str(request.url).rstrip("/") + "/index.html")),
        Route("/vocabulary.json", _page_vocabulary),
        Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True)),
    ]
)


def _served_tag() -> str:
    """The model version pinned in the Bento when serving a built Bento, else ``model_tag()``."""
    bento = getattr(globals().get("EmotionService"), "bento", None)
    if bento is not None:
        for service in bento.info.services:
            for model in service.models:
                if model.tag.name == MODEL_TAG.split(":")[0]:
                    return str(model.tag)
    return MODEL_TAG


def imported_model():
    """The model imported into the BentoML store (``python -m serving.import_model``), or None
    when none was: then the bundled default model is served. An EMOTION_MODEL_TAG naming a
    missing model is an error (NoModelError), never a silent fallback."""
    try:
        return find_stored_model(_served_tag())
    except NoModelError:
        if SETTINGS.model_tag:
            raise
        return None


def _has_imported_model() -> bool:
    try:
        return imported_model() is not None
    except NoModelError:
        return False  # _startup_check says why


def _startup_check() -> None:
    """Refuse to start, with the fix in the message, when EMOTION_MODEL_TAG names no stored model
    or there is neither an imported nor a bundled model."""
    try:
        if imported_model() is None and bundled_model_path() is None:
            raise NoModelError("no model imported into the BentoML store and no bundled default model")
        SETTINGS.detection()
    except (NoModelError, ValueError) as error:
        print(f"\nerror: {error}\n", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@bentoml.service(name="emotion-classifier", workers=1, traffic={"timeout": 300}, resources={"cpu": "1"})
class EmotionClassifier:
    """The model and BentoML's adaptive batcher, in a process of its own when served: every API of
    EmotionService sends its faces here (``bentoml.depends``), so concurrent requests share calls."""

    # An imported model is a dependency of the service (``bentoml build`` packs it into the Bento);
    # without one the Bento carries the bundled default model as package data.
    if _has_imported_model():
        model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from emotion_recognition.inference import EmotionRecognizer

        stored = imported_model()
        if stored is not None:
            path = stored.path_of(MODEL_FILE)
            # /model_info shows no file path or tracking URI (which may hold credentials)
            info = {"tag": str(stored.tag), **{k: str(v) for k, v in stored.info.metadata.items()
                                               if k not in ("source_file", "mlflow_tracking_uri")}}
            logger.info("serving the imported model %s (%s)", stored.tag, info.get("source", "?"))
        else:
            path = bundled_model_path()
            if path is None:
                raise NoModelError("no model imported into the BentoML store and no bundled default model")
            info = {"tag": "bundled", "source": "bundled"}
            logger.info("no model imported into the BentoML store: serving the bundled default model %s", path)
        self.recognizer = EmotionRecognizer.from_file(path, None, from_preset(SETTINGS.tta), SETTINGS.model_batch,
                                                      SETTINGS.runtime, SETTINGS.runtime_threads)
        self.info = {**info, "runtime": self.recognizer.classifier.runtime,
                     "test_time_augmentation": self.recognizer.tta.describe()}
        self.recognizer.classify_faces(np.zeros((1, FACE_SIZE, FACE_SIZE), np.uint8))  # warm up

    # faces checked per request before batching, as in EmotionService: with BENTOML_NO_UDS this is a local TCP port.
    # The batcher cancels (503) a call it expects to wait longer than max_latency_ms: at 200 ms, with two
    # HTTP workers detecting on both cores, 2 in 200 requests at 16 clients got a 503 (bench/README.md).
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=CLASSIFY_MAX_FACES, max_latency_ms=1000)
    def classify(self, faces: Annotated[np.ndarray, AfterValidator(check_faces)]) -> np.ndarray:
        return self.recognizer.classify_faces(np.asarray(faces, np.uint8))

    @bentoml.api
    def describe(self) -> dict:
        return self.info


@bentoml.asgi_app(ui_app, path="/ui")
@bentoml.service(
    name="emotion",
    workers=SETTINGS.workers,
    traffic={"timeout": 300},  # concurrency: RequestGuard (a slow upload holds no slot)
    http={"host": "127.0.0.1"},  # plain `bentoml serve` stays local; --host 0.0.0.0 to expose it
    resources={"cpu": "2"},
)
class EmotionService:
    classifier = bentoml.depends(EmotionClassifier)

    def __init__(self) -> None:
        self.settings = settings = SETTINGS
        self.detection = settings.detection()
        self.face_detection = describe_detector(self.detection)
        logger.info("face detector: %s", self.face_detection)
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self._cpu_limiter = None  # created on first use, inside the event loop

    # ------------------------------------------------------------------ helpers
    # The public APIs are async: CPU work (decoding, detection, drawing, video I/O) runs in a
    # worker thread (at most EMOTION_CPU_THREADS at once), off the event loop, and faces go to
    # EmotionClassifier's batchable ``classify``, so faces of concurrent requests share model calls.

    async def _run(self, func, *args):
        if self._cpu_limiter is None:
            self._cpu_limiter = anyio.CapacityLimiter(self.settings.cpu_threads)
        return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=self._cpu_limiter)

    def _decode(self, upload: Path) -> np.ndarray:
        try:
            check_size(os.path.getsize(upload), self.limits)
            return decode_image(Path(upload).read_bytes(), self.limits)
        except InputError as error:
            raise BadInput(str(error), error.http_status) from None

    async def _classify(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        if len(faces) > BATCHER_CHUNK:
            # BentoML's batcher cancels (503) a request it expects to finish after max_latency_ms:
            # many faces go in small concurrent calls it can merge with other requests' faces
            parts = [faces[start : start + BATCHER_CHUNK] for start in range(0, len(faces), BATCHER_CHUNK)]
            calls = asyncio.Semaphore(BATCHER_CALLS)

            async def one(part):
                async with calls:
                    return await self._classify(part)

            return np.concatenate(await asyncio.gather(*(one(part) for part in parts)))
        if isinstance(self.classifier, EmotionClassifier.inner):  # not served (the tests' ASGI app): the instance itself
            probabilities = await self._run(self.classifier.classify, faces)
        else:  # served: the classifier's process, through its adaptive batcher
            for attempt in range(3):
                try:
                    probabilities = await self.classifier.to_async.classify(faces)
                    break
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, RuntimeError) as error:
                    # bentoml.depends' proxy (_bentoml_impl/client/proxy2.py) is an aiohttp client; under
                    # load a keep-alive connection is now and then closed as it is reused (1 in 300 calls
                    # at 16 clients, seen in bench/serving_throughput.py), before the request or while its
                    # answer is read (aiohttp's RuntimeError "Connection closed."). The same call again
                    # (classify has no side effects), never another path; a timeout is not retried (it
                    # would wait 3 times). Still failing: a 503 the client can retry, not a 500.
                    if isinstance(error, RuntimeError) and str(error) != "Connection closed.":
                        raise
                    if attempt == 2:
                        logger.warning("classify failed 3 times on a closed connection: %s", error)
                        raise BadInput("the classifier closed the connection 3 times: retry the request", 503) from None
        return np.asarray(probabilities, dtype=np.float32).reshape(len(faces), NUM_CLASSES)

    async def _analyze_images(self, images: list[np.ndarray]) -> list[list[FaceResult]]:
        located = await self._run(lambda: [locate_faces(image, self.detection) for image in images])
        return classify_located(located, await self._classify(stack_faces(located)))

    def _open_video(self, video: Path, every: int, max_frames: int):
        """(info, frames) of an uploaded video, within the limits (``every`` >= 1: the APIs check it)."""
        size, settings = os.path.getsize(video), self.settings
        if size == 0:
            raise BadInput("the upload is empty (0 bytes): send a video file", 400)
        if size > settings.max_video_bytes:
            raise BadInput(f"the video is {size:,} bytes, over the limit of {settings.max_video_bytes:,}", 413)
        if max_frames < 0:
            raise BadInput(f"max_frames must be >= 0 (0: the server's limit), got {max_frames}", 400)
        limits = VideoLimits(self.limits.max_pixels, settings.max_video_decoded_frames, settings.max_video_pixels)
        limit = min(max_frames, settings.max_video_frames) if max_frames > 0 else settings.max_video_frames
        try:
            # no max_frames given: more frames to analyse than the limit is a 413 (below, or while
            # reading a stream that does not tell its frame count), never a silent cut
            info, frames = video_frames(video, every=every, max_frames=limit, limits=limits, refuse_more=max_frames <= 0)
        except InputError as error:  # the file's name is our temp name: meaningless to the client
            raise BadInput(str(error).replace(video.name, "the upload"), error.http_status) from None
        if info.frame_count and info.frame_count // every > settings.max_video_frames and max_frames <= 0:
            raise BadInput(
                f"the video has {info.frame_count} frames; at every={every} that is over the limit of "
                f"{settings.max_video_frames} analysed frames: pass a larger 'every' or 'max_frames'",
                413,
            )
        max_read = limits.max_read(info)  # the decoded-frame cap and the per-video pixel budget
        # frames decoded (analysed or skipped): every x analysed frames, at most the whole video
        # (an unknown frame count is checked while reading)
        needed = min(info.frame_count, every * (limit - 1) + 1) if info.frame_count else 0
        if needed > max_read:
            raise BadInput(f"at every={every} and {limit} analysed frames this video needs {needed:,} decoded "
                           f"frames, over the limit of {max_read:,}: pass a smaller 'every' or 'max_frames'", 413)
        return info, frames

    async def _video_chunks(self, frames, chunk: int = 16):
        """Yield (frames, results) for successive chunks of a frame iterator (read in a worker thread)."""
        batches = chunks(frames, chunk)

        def next_chunk():
            try:
                return next(batches, [])
            except InputError as error:
                raise BadInput(str(error), error.http_status) from None

        while batch := await self._run(next_chunk):
            yield batch, await self._analyze_images([f.rgb for f in batch])

    async def _timeline(self, video: Path, every: int, max_frames: int, smooth_frames: int) -> dict:
        info, frames = await self._run(self._open_video, video, every, max_frames)
        tracker = FaceTracker(smooth_frames=smooth_frames)  # one per request: frames in order
        timeline: list[dict] = []
        async for batch, results in self._video_chunks(frames):
            timeline.extend(timeline_frame(f.index, f.time_s, tracker.update(faces)) for f, faces in zip(batch, results))
        return {
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "frame_count": info.frame_count,
            "every": every,
            "smooth_frames": smooth_frames,
            "frames": timeline,
        }

    # ------------------------------------------------------------------ APIs

    @bentoml.api
    async def classify(
        self,
        faces: Annotated[np.ndarray, AfterValidator(check_faces)],
    ) -> np.ndarray:
        """(N, 48, 48) grayscale faces, values 0-255 -> (N, 7) probabilities in label order; at most
        128 faces per call (the batch size: BentoML's batcher cannot fit a larger call)."""
        return await self._classify(np.asarray(faces).astype(np.uint8))

    @bentoml.api
    async def analyze(self, image: Path) -> list[dict]:
        """Every face in the image: box (x, y, w, h), detector confidence, emotion, 7 probabilities."""
        rgb = await self._run(self._decode, image)
        return [r.to_dict() for r in (await self._analyze_images([rgb]))[0]]

    @bentoml.api
    async def annotate(
        self,
        image: Path,
        language: Literal["en", "es"] = "en",
        format: Literal["jpeg", "png"] = "jpeg",
        context: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Annotated[Path, ContentType("image/*")]:
        """The image with every face's box and emotion label drawn (English or Spanish labels)."""
        from emotion_recognition.drawing import draw_results

        rgb = await self._run(self._decode, image)
        results = (await self._analyze_images([rgb]))[0]
        suffix = "jpg" if format == "jpeg" else "png"
        out = Path(context.temp_dir) / f"annotated.{suffix}"

        def draw_and_write() -> None:
            out.write_bytes(encode_image(draw_results(rgb, results, language=language), suffix))

        await self._run(draw_and_write)
        context.response.headers["X-Faces"] = str(len(results))
        context.response.headers["X-Emotions"] = json.dumps([r.emotion for r in results])
        return out

    @bentoml.api
    async def analyze_frames(self, frames: list[Path]) -> list[list[dict]]:
        """Several images (e.g. video frames): one list of faces per image, in order."""
        if not frames:
            raise BadInput("send at least one frame (multipart field 'frames')", 400)

        def decode_all() -> list[np.ndarray]:
            # headers first (sizes, formats, pixel counts of every frame), so that no pixel is
            # decoded for a request over a limit
            datas, total = [], 0
            for i, frame in enumerate(frames):
                try:
                    data = Path(frame).read_bytes()
                    width, height = open_image_header(data, self.limits).size
                except InputError as error:
                    raise BadInput(f"frame {i}: {error}", error.http_status) from None
                total += width * height
                if total > self.settings.max_request_pixels:
                    raise BadInput(f"frames 0-{i} hold {total:,} pixels, over the limit of "
                                   f"{self.settings.max_request_pixels:,} pixels per request: send fewer or smaller frames", 413)
                datas.append(data)
            images = []
            for i, data in enumerate(datas):
                try:
                    images.append(decode_image(data, self.limits))
                except InputError as error:
                    raise BadInput(f"frame {i}: {error}", error.http_status) from None
            return images

        images = await self._run(decode_all)
        return [[r.to_dict() for r in faces] for faces in await self._analyze_images(images)]

    @bentoml.api
    async def video_timeline(
        self,
        video: Path,
        every: Every = 1,
        max_frames: int = 0,
        smooth_frames: SmoothFrames = 1,
    ) -> dict:
        """Per-frame faces of a video file: every ``every``-th frame, at most ``max_frames`` (0: the limit).
        Each face has a ``track_id`` (the same face keeps it across frames); with ``smooth_frames``
        N > 1 its emotion and probabilities are the mean over its track's last N analysed frames."""
        return await self._timeline(video, every, max_frames, smooth_frames)

    @bentoml.api
    async def video_timeline_csv(
        self,
        video: Path,
        every: Every = 1,
        max_frames: int = 0,
        smooth_frames: SmoothFrames = 1,
        context: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Annotated[Path, ContentType("text/csv")]:
        """The timeline as CSV: one row per face, with its track id (frames without a face get one
        empty row)."""
        timeline = await self._timeline(video, every, max_frames, smooth_frames)
        out = Path(context.temp_dir) / "timeline.csv"
        with open(out, "w", newline="") as f:
            write_timeline_csv(timeline["frames"], f)
        return out

    @bentoml.api
    async def annotate_video(
        self,
        video: Path,
        language: Literal["en", "es"] = "en",
        every: Every = 1,
        max_frames: int = 0,
        format: Literal["mp4", "webm"] = "mp4",
        smooth_frames: SmoothFrames = 1,
        context: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Path:
        """The video with boxes and labels ("#track_id emotion NN%") drawn on every analysed frame:
        MP4 (mp4v codec) or WebM (VP8, plays in browsers). The response's Content-Type follows the
        format. ``smooth_frames`` as for /video_timeline."""
        from emotion_recognition.drawing import draw_results
        from emotion_recognition.media import VideoWriter

        info, frames = await self._run(self._open_video, video, every, max_frames)
        tracker = FaceTracker(smooth_frames=smooth_frames)
        out = Path(context.temp_dir) / f"annotated.{format}"
        try:
            writer = VideoWriter(out, info.fps / every, info.width, info.height)
        except OSError:
            raise BadInput(f"a {info.width}x{info.height} video cannot be encoded as {format}", 400) from None
        try:
            async for batch, results in self._video_chunks(frames):

                def draw_chunk(batch=batch, results=results) -> None:
                    for f, faces in zip(batch, results):
                        tracked = tracker.update(faces)
                        writer.write(
                            draw_results(f.rgb, [t.result for t in tracked], language=language,
                                         track_ids=[t.track_id for t in tracked])
                        )

                await self._run(draw_chunk)
        finally:
            writer.close()
        return out

    @bentoml.api(route="/model_info")
    async def model_info_api(self) -> dict:
        """Which model is served (BentoML tag, MLflow version/run id when imported from MLflow)."""
        local = isinstance(self.classifier, EmotionClassifier.inner)
        info = self.classifier.describe() if local else await self.classifier.to_async.describe()
        return {**info, "face_detection": self.face_detection, "labels": list(EMOTIONS), "translations": TRANSLATIONS}


_ROUTES = {api.route: api for api in EmotionService.apis.values()}
EmotionService.add_asgi_middleware(
    RequestGuard, api_paths=set(_ROUTES), file_paths={r for r, api in _ROUTES.items() if api.input_spec.multipart_fields},
    max_bytes=SETTINGS.max_request_bytes, max_concurrency=SETTINGS.max_concurrency,
    upload_grace_s=SETTINGS.upload_grace_s, min_upload_rate=SETTINGS.min_upload_rate,
)
bound_metric_labels(set(_ROUTES) | {"/", "/docs.json", "/schema.json", "/healthz", "/livez", "/readyz", "/metrics", "/ui"})
bound_header_time(SETTINGS.upload_grace_s)  # a request's headers within the upload grace, else 408


if not SETTINGS.skip_startup_check:
    _startup_check()
