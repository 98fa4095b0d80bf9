// Web page of the emotion service: photo (POST /analyze, /annotate), video (/video_timeline,
// /annotate_video, /video_timeline_csv) and live webcam (/analyze per frame).
// Emotion names, their order, translations, colours and upload limits come from the server
// (GET /ui/vocabulary.json); this file only holds the page's own texts, in English and Spanish.
"use strict";

// The page's own texts: key -> [English, Spanish] (the languages of labels.TRANSLATIONS).
const STRINGS = {
  title: ["Facial emotion recognition", "Reconocimiento de emociones faciales"],
  language: ["Language", "Idioma"],
  photo: ["Photo", "Foto"],
  video: ["Video", "Vídeo"],
  webcam: ["Webcam", "Cámara"],
  choosePhoto: ["Choose a photo", "Elegir una foto"],
  photoHint: ["or drop it here, or paste it (Ctrl+V). JPEG, PNG, WebP or BMP.", "o suéltala aquí, o pégala (Ctrl+V). JPEG, PNG, WebP o BMP."],
  analysing: ["analysing…", "analizando…"],
  noFace: ["no face found", "no se encontró ninguna cara"],
  nFaces: ["{n} face(s)", "{n} cara(s)"],
  face: ["Face {n}", "Cara {n}"],
  confidence: ["face confidence {c}", "confianza de la cara {c}"],
  downloadImage: ["Download annotated image", "Descargar imagen anotada"],
  downloadJson: ["Download JSON", "Descargar JSON"],
  downloadCsv: ["Download CSV", "Descargar CSV"],
  downloadVideo: ["Download annotated video", "Descargar vídeo anotado"],
  chooseVideo: ["Choose a video", "Elegir un vídeo"],
  videoHint: ["or drop it here. The server analyses it, draws the faces and follows each one.", "o suéltalo aquí. El servidor lo analiza, dibuja las caras y sigue a cada una."],
  every: ["Analyse every Nth frame", "Analizar uno de cada N fotogramas"],
  maxFrames: ["At most this many frames (0: the server's limit)", "Como máximo tantos fotogramas (0: el límite del servidor)"],
  smoothing: ["Smoothing", "Suavizado"],
  off: ["off", "ninguno"],
  nFrames: ["{n} frames", "{n} fotogramas"],
  analyseVideo: ["Analyse video", "Analizar vídeo"],
  stepTimeline: ["step 1 of 2: emotions over time", "paso 1 de 2: emociones a lo largo del tiempo"],
  stepVideo: ["step 2 of 2: annotated video", "paso 2 de 2: vídeo anotado"],
  uploading: ["uploading {p}%", "subiendo {p}%"],
  waiting: ["analysing, {s} s", "analizando, {s} s"],
  videoDone: ["{frames} frames analysed, {tracks} face(s) followed", "{frames} fotogramas analizados, {tracks} cara(s) seguida(s)"],
  track: ["Face #{id}", "Cara #{id}"],
  trackCaption: ["{n} frames from {t0} s to {t1} s, mostly {emotion}", "{n} fotogramas de {t0} s a {t1} s, sobre todo {emotion}"],
  seconds: ["time (s)", "tiempo (s)"],
  startWebcam: ["Start webcam", "Encender la cámara"],
  stop: ["Stop", "Parar"],
  webcamHint: ["Frames go to this server one at a time; each face keeps its #id from frame to frame.", "Los fotogramas van a este servidor de uno en uno; cada cara conserva su #id."],
  liveStatus: ["frames analysed: {frames} · faces in last frame: {faces} · {fps} FPS · round trip {rtt} ms · faces followed: {tracks}", "fotogramas analizados: {frames} · caras en el último: {faces} · {fps} FPS · ida y vuelta {rtt} ms · caras seguidas: {tracks}"],
  tooBig: ["{name} is {size} MB, over the server's limit of {limit} MB", "{name} pesa {size} MB, más que el límite del servidor de {limit} MB"],
  serverSaid: ["the server answered {status}: {message}", "el servidor respondió {status}: {message}"],
  cannotShow: ["this browser cannot show the image: {message}", "este navegador no puede mostrar la imagen: {message}"],
  unreachable: ["the server could not be reached", "no se pudo contactar con el servidor"],
  noCamera: ["this browser gives no camera access here (needs HTTPS or localhost)", "este navegador no da acceso a la cámara aquí (hace falta HTTPS o localhost)"],
  cameraUnavailable: ["camera not available: {message}", "cámara no disponible: {message}"],
  model: ["model {tag}", "modelo {tag}"],
  api: ["API", "API"],
};
const LANGUAGES = ["en", "es"];
let vocab = { labels: [], translations: {}, colours: {}, limits: {} }; // GET /ui/vocabulary.json
const $ = (id) => document.getElementById(id);
const lang = () => $("language").value;
const t = (key, params = {}) =>
  STRINGS[key][Math.max(LANGUAGES.indexOf(lang()), 0)].replace(/\{(\w+)\}/g, (_, name) => params[name]);
const emotionName = (emotion) => (vocab.translations[lang()] || {})[emotion] || emotion;
const percent = (p) => `${Math.round(100 * p)}%`;

function label(face) {
  const id = face.track_id === undefined ? "" : `#${face.track_id} `;
  return `${id}${emotionName(face.emotion)} ${percent(face.probabilities[face.emotion])}`;
}

function translatePage() {
  document.documentElement.lang = lang();
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n, el.dataset);
}

// ---------------------------------------------------------------- face tracking
// The same algorithm as emotion_recognition/face_tracking.py (see docs/video.md), needed here
// because the webcam sends frames one request at a time: greedy matching on IoU with each live
// track's last box; an unmatched face starts a new track (ids 1, 2, ...); a track with no face
// keeps its id for up to maxMissed more frames. With smoothFrames N > 1 a face's probabilities
// are the mean of its track's last N observed vectors, its emotion their argmax.

function boxIou(a, b) {
  const x0 = Math.max(a.x, b.x), y0 = Math.max(a.y, b.y);
  const x1 = Math.min(a.x + a.w, b.x + b.w), y1 = Math.min(a.y + a.h, b.y + b.h);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const union = a.w * a.h + b.w * b.h - inter;
  return union > 0 ? inter / union : 0;
}

class FaceTracker {
  constructor({ smoothFrames = 1, maxMissed = 5, minIou = 0.3 } = {}) {
    this.smoothFrames = smoothFrames;
    this.maxMissed = maxMissed;
    this.minIou = minIou;
    this.tracks = []; // {id, box, missed, history: [probability vectors]}
    this.tracksStarted = 0;
  }

  // faces: the JSON of /analyze for one frame -> the same faces (same order) with track_id,
  // and smoothed emotion/probabilities when smoothFrames > 1.
  update(faces) {
    const pairs = [];
    this.tracks.forEach((t, i) => faces.forEach((f, j) => pairs.push([boxIou(t.box, f.box), i, j])));
    pairs.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
    const trackOf = new Map(), usedTracks = new Set();
    for (const [overlap, i, j] of pairs) {
      if (overlap < this.minIou) break;
      if (usedTracks.has(i) || trackOf.has(j)) continue;
      usedTracks.add(i);
      trackOf.set(j, this.tracks[i]);
    }
    this.tracks.forEach((t, i) => { if (!usedTracks.has(i)) t.missed += 1; });
    const started = [];
    const out = faces.map((face, j) => {
      let track = trackOf.get(j);
      if (track) {
        track.box = face.box;
        track.missed = 0;
      } else {
        this.tracksStarted += 1;
        track = { id: this.tracksStarted, box: face.box, missed: 0, history: [] };
        started.push(track);
      }
      return this.smoothed(track, face);
    });
    this.tracks = this.tracks.filter((t) => t.missed <= this.maxMissed).concat(started);
    return out;
  }

  smoothed(track, face) {
    const names = Object.keys(face.probabilities);
    track.history.push(names.map((n) => face.probabilities[n]));
    while (track.history.length > this.smoothFrames) track.history.shift();
    if (this.smoothFrames <= 1) return { ...face, track_id: track.id };
    const mean = names.map((_, k) => track.history.reduce((sum, v) => sum + v[k], 0) / track.history.length);
    const top = mean.indexOf(Math.max(...mean));
    const probabilities = Object.fromEntries(names.map((n, k) => [n, mean[k]]));
    return { ...face, track_id: track.id, emotion: names[top], probabilities };
  }
}
window.FaceTracker = FaceTracker; // for the browser test (tests/serving/test_browser.py)

// ---------------------------------------------------------------- requests, errors, downloads
let lastError = null; // [key, params] or a server message, re-rendered on a language change

function showError(key, params) {
  lastError = key ? [key, params] : null;
  $("error").textContent = key ? t(key, params) : "";
}

// A multipart POST; resolves to the response Blob, or rejects with the server's message
// (BentoML answers errors as {"error": ...} or [{"error": ...}]). XMLHttpRequest rather than
// fetch for the upload progress.
function post(url, fields, onUpload) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value instanceof Blob) form.append(name, value, value.name || "upload");
    else form.append(name, String(value));
  }
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "blob";
    if (onUpload) {
      xhr.upload.onprogress = (e) => e.lengthComputable && onUpload(e.loaded / e.total);
      xhr.upload.onload = () => onUpload(1);
    }
    xhr.onerror = () => reject(Object.assign(new Error("unreachable"), { key: "unreachable" }));
    xhr.onload = async () => {
      if (xhr.status < 400) return resolve(xhr.response);
      let message = await xhr.response.text();
      try {
        const body = JSON.parse(message);
        const item = Array.isArray(body) ? body[0] : body;
        message = (item && item.error) || message;
      } catch (e) { /* not JSON: the text itself */ }
      reject(Object.assign(new Error(message), { key: "serverSaid", params: { status: xhr.status, message } }));
    };
    xhr.send(form);
  });
}

const failed = (error) => showError(error.key || "serverSaid", error.params || { status: "?", message: error.message });

// A file over the server's limit is refused before uploading it (the server would answer 413).
function tooBig(file, limit) {
  if (!limit || file.size <= limit) return false;
  const mb = (n) => (n / 1048576).toFixed(1);
  showError("tooBig", { name: file.name || "file", size: mb(file.size), limit: mb(limit) });
  return true;
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// makeBlob: () => Blob or Promise<Blob>, called at each click (e.g. in the current language).
function downloadButton(id, name, makeBlob) {
  $(id).onclick = async () => {
    const button = $(id);
    button.disabled = true;
    try {
      saveBlob(await makeBlob(), typeof name === "function" ? name() : name);
      showError("");
    } catch (error) {
      failed(error);
    } finally {
      button.disabled = false;
    }
  };
}
const jsonBlob = (data) => new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });

// ---------------------------------------------------------------- faces: boxes and cards
function drawFaces(ctx, faces, scale, highlight = null) {
  const lineWidth = Math.max(2, Math.round(ctx.canvas.width / 320));
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px sans-serif`;
  ctx.textBaseline = "top";
  faces.forEach((face, i) => {
    const { x, y, w, h } = face.box;
    const colour = vocab.colours[face.emotion] || "white";
    ctx.globalAlpha = highlight === null || highlight === i ? 1 : 0.35;
    ctx.lineWidth = highlight === i ? 2 * lineWidth : lineWidth;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x * scale, y * scale, w * scale, h * scale);
    const text = label(face);
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font, 10) + 6;
    const top = y * scale - th >= 0 ? y * scale - th : y * scale;
    ctx.fillStyle = colour;
    ctx.fillRect(x * scale, top, tw, th);
    ctx.fillStyle = "black";
    ctx.fillText(text, x * scale + 4, top + 3);
  });
  ctx.globalAlpha = 1;
}

// One card per face: its crop (from `source`, an image or canvas in the faces' pixel
// coordinates), its emotion and one labelled bar per emotion, in the server's label order.
function renderCards(list, faces, source, focusable) {
  list.innerHTML = "";
  faces.forEach((face, i) => {
    const card = document.createElement("li");
    card.className = "face-card";
    card.dataset.index = i;
    card.dataset.emotion = face.emotion;
    if (focusable) card.tabIndex = 0;
    const crop = document.createElement("canvas");
    crop.width = crop.height = 72;
    const { x, y, w, h } = face.box;
    crop.getContext("2d").drawImage(source, x, y, w, h, 0, 0, 72, 72);
    const title = document.createElement("h3");
    const who = face.track_id === undefined ? t("face", { n: i + 1 }) : `#${face.track_id}`;
    title.textContent = `${who}: ${emotionName(face.emotion)} ${percent(face.probabilities[face.emotion])}`;
    const detail = document.createElement("p");
    detail.className = "muted";
    detail.textContent = t("confidence", { c: face.confidence.toFixed(2) });
    const bars = document.createElement("div");
    bars.className = "bars";
    for (const emotion of vocab.labels) {
      const p = face.probabilities[emotion];
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.emotion = emotion;
      bar.dataset.percent = String(100 * p);
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", (100 * p).toFixed(1));
      bar.setAttribute("aria-label", emotionName(emotion));
      bar.innerHTML = '<span class="bar-name"></span><span class="bar-track"><span class="bar-fill"></span></span><span class="bar-value"></span>';
      bar.querySelector(".bar-name").textContent = emotionName(emotion);
      Object.assign(bar.querySelector(".bar-fill").style, { width: `${100 * p}%`, background: vocab.colours[emotion] });
      bar.querySelector(".bar-value").textContent = percent(p);
      bars.append(bar);
    }
    const text = document.createElement("div");
    text.append(title, detail);
    card.append(crop, text, bars);
    list.append(card);
  });
}

// ---------------------------------------------------------------- photo mode
let photo = null; // {file, bitmap, faces, scale, highlight}

function renderPhoto() {
  if (!photo) return;
  const { bitmap, faces } = photo;
  const canvas = $("photo-canvas");
  photo.scale = Math.min(1, 900 / bitmap.width);
  canvas.width = Math.round(bitmap.width * photo.scale);
  canvas.height = Math.round(bitmap.height * photo.scale);
  renderCards($("photo-faces"), faces, bitmap, true);
  highlightFace(photo.highlight);
  $("photo-status").textContent = faces.length ? t("nFaces", { n: faces.length }) : t("noFace");
  $("photo-downloads").hidden = false;
}

// Card <-> box: the card under the pointer or with the focus, or the box under the pointer,
// highlights both (null: none).
function highlightFace(index) {
  photo.highlight = index;
  const canvas = $("photo-canvas");
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo.bitmap, 0, 0, canvas.width, canvas.height);
  drawFaces(ctx, photo.faces, photo.scale, index);
  canvas.dataset.highlight = index === null ? "" : String(index);
  for (const card of $("photo-faces").children) card.classList.toggle("highlight", Number(card.dataset.index) === index);
}

const cardIndex = (event) => {
  const card = event.target.closest && event.target.closest(".face-card");
  return card ? Number(card.dataset.index) : null;
};
for (const type of ["mouseover", "focusin"]) $("photo-faces").addEventListener(type, (e) => photo && highlightFace(cardIndex(e)));
for (const type of ["mouseleave", "focusout"]) $("photo-faces").addEventListener(type, () => photo && highlightFace(null));

function faceAtPointer(event) {
  const canvas = $("photo-canvas"), rect = canvas.getBoundingClientRect();
  const px = ((event.clientX - rect.left - canvas.clientLeft) * canvas.width) / canvas.clientWidth / photo.scale;
  const py = ((event.clientY - rect.top - canvas.clientTop) * canvas.height) / canvas.clientHeight / photo.scale;
  let best = null;
  photo.faces.forEach(({ box }, i) => {
    const inside = px >= box.x && px < box.x + box.w && py >= box.y && py < box.y + box.h;
    if (inside && (best === null || box.w * box.h < photo.faces[best].box.w * photo.faces[best].box.h)) best = i;
  });
  return best;
}
$("photo-canvas").addEventListener("mousemove", (e) => {
  if (photo && faceAtPointer(e) !== photo.highlight) highlightFace(faceAtPointer(e));
});
$("photo-canvas").addEventListener("mouseleave", () => photo && highlightFace(null));
$("photo-canvas").addEventListener("click", (e) => {
  const i = photo && faceAtPointer(e);
  if (i !== null && i !== undefined) $("photo-faces").children[i].focus();
});

let photoRequests = 0; // only the latest photo's answer is shown (two pastes in a row)

async function analysePhoto(file) {
  showError("");
  if (tooBig(file, vocab.limits.max_image_bytes)) return;
  $("photo-status").textContent = t("analysing");
  const request = ++photoRequests;
  try {
    const faces = JSON.parse(await (await post("/analyze", { image: file })).text());
    // The server honours EXIF orientation; imageOrientation "from-image" makes the browser agree.
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }).catch((error) => {
      throw Object.assign(error, { key: "cannotShow", params: { message: error.message } });
    });
    if (request !== photoRequests) return;
    photo = { file, bitmap, faces, scale: 1, highlight: null };
    renderPhoto();
  } catch (error) {
    $("photo-status").textContent = "";
    failed(error);
  }
}

$("photo-input").addEventListener("change", (e) => e.target.files[0] && analysePhoto(e.target.files[0]));
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  showTab("photo");
  analysePhoto(file);
});
downloadButton("photo-download-json", "faces.json", () => jsonBlob(photo.faces));
downloadButton(
  "photo-download-image",
  () => (photo.file.type === "image/png" ? "annotated.png" : "annotated.jpg"),
  () => post("/annotate", { image: photo.file, language: lang(), format: photo.file.type === "image/png" ? "png" : "jpeg" }),
);

function dropZone(id, onFile) {
  const zone = $(id);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files);
  });
}
dropZone("photo-drop", (files) => analysePhoto(files[0]));

// ---------------------------------------------------------------- video mode
let video = null; // {timeline, params, blob}

async function analyseVideo() {
  const file = $("video-input").files[0];
  showError("");
  if (!file || tooBig(file, vocab.limits.max_video_bytes)) return;
  const params = {
    video: file, every: $("video-every").value, max_frames: $("video-max-frames").value,
    smooth_frames: $("video-smoothing").value,
  };
  $("video-results").hidden = true;
  $("video-progress-box").hidden = false;
  $("video-submit").disabled = true;
  const progress = $("video-progress");
  let step = "", uploaded = 0, started = 0;
  const status = () => {
    const detail = uploaded < 1 ? t("uploading", { p: Math.round(100 * uploaded) })
      : t("waiting", { s: Math.round((performance.now() - started) / 1000) });
    $("video-status").textContent = `${t(step)} · ${detail}`;
  };
  const timer = setInterval(status, 500);
  // each step: the upload moves the bar through the first half of the step's share (bytes
  // sent), then the status counts the seconds of the server's analysis
  const run = (key, index, url, fields) => {
    [step, uploaded, started] = [key, 0, performance.now()];
    progress.value = index;
    status();
    return post(url, fields, (fraction) => {
      uploaded = fraction;
      progress.value = index + 0.5 * fraction;
      status();
    });
  };
  try {
    const timeline = JSON.parse(await (await run("stepTimeline", 0, "/video_timeline", params)).text());
    video = { timeline, params, blob: null };
    $("video-results").hidden = false;
    renderVideo();
    $("video-download-video").disabled = true;
    const blob = await run("stepVideo", 1, "/annotate_video", { ...params, language: lang(), format: "webm" });
    // WebM (VP8): the service's MP4 is mp4v (MPEG-4 part 2), which browsers do not play.
    video.blob = blob;
    $("video-player").src = URL.createObjectURL(blob);
    $("video-download-video").disabled = false;
    progress.value = 2;
    $("video-progress-box").hidden = true;
  } catch (error) {
    $("video-progress-box").hidden = true;
    failed(error);
  } finally {
    clearInterval(timer);
    $("video-submit").disabled = false;
  }
}

window.addEventListener("resize", renderVideo); // charts are drawn at their shown width
$("video-form").addEventListener("submit", (e) => { e.preventDefault(); analyseVideo(); });
dropZone("video-drop", (files) => { $("video-input").files = files; $("video-form").requestSubmit(); });
downloadButton("video-download-json", "timeline.json", () => jsonBlob(video.timeline));
downloadButton("video-download-csv", "timeline.csv", () => post("/video_timeline_csv", video.params));
downloadButton("video-download-video", "annotated.webm", () => video.blob);

// The timeline's faces grouped by track: id -> [{frame, time_s, probabilities}, ...]; a frame the
// track is absent from (between its first and last) is a gap in its chart.
function tracksOf(timeline) {
  const tracks = new Map();
  for (const frame of timeline.frames) {
    for (const face of frame.faces) {
      if (!tracks.has(face.track_id)) tracks.set(face.track_id, []);
      tracks.get(face.track_id).push({ frame: frame.frame, time_s: frame.time_s, probabilities: face.probabilities });
    }
  }
  return tracks;
}

const SVG = "http://www.w3.org/2000/svg";
function svgElement(name, attributes, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

// One SVG line chart per track: x = time over the whole analysed video, y = probability (0-100%),
// one series (path) per emotion in its colour.
function trackChart(id, points, frames) {
  // drawn at the width it is shown at (text at its CSS size, on a phone too)
  const W = Math.max(300, Math.min(900, $("video-charts").clientWidth || 640)), H = 180;
  const left = 40, right = 10, top = 10, bottom = 34;
  const t0 = frames[0].time_s, t1 = frames[frames.length - 1].time_s;
  const x = (time) => left + ((time - t0) / (t1 - t0 || 1)) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.track = id;
  const svg = svgElement("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": t("track", { id }) }, figure);
  for (const p of [0, 0.5, 1]) {
    svgElement("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), class: "grid" }, svg);
    svgElement("text", { x: left - 4, y: y(p) + 4, "text-anchor": "end" }, svg).textContent = percent(p);
  }
  for (const time of [t0, t1]) svgElement("text", { x: x(time), y: H - 18, "text-anchor": "middle" }, svg).textContent = time.toFixed(1);
  svgElement("text", { x: (left + W) / 2, y: H - 3, "text-anchor": "middle" }, svg).textContent = t("seconds");
  const seen = new Set(points.map((p) => p.frame));
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const emotion of vocab.labels) {
    let d = "", drawing = false, i = 0;
    for (const frame of frames) {
      if (frame.frame < points[0].frame || frame.frame > points[points.length - 1].frame) continue;
      if (!seen.has(frame.frame)) { drawing = false; continue; }
      const p = points[i++];
      d += `${drawing ? "L" : "M"}${x(p.time_s).toFixed(1)},${y(p.probabilities[emotion]).toFixed(1)}`;
      drawing = true;
    }
    if (points.length === 1) d += "h2"; // a single frame: a short dash, still visible
    const path = svgElement("path", { d, stroke: vocab.colours[emotion], class: "series", "data-emotion": emotion }, svg);
    svgElement("title", {}, path).textContent = emotionName(emotion);
    const item = document.createElement("li");
    item.innerHTML = '<span class="swatch"></span>';
    item.firstChild.style.background = vocab.colours[emotion];
    item.append(emotionName(emotion));
    legend.append(item);
  }
  const mean = vocab.labels.map((e) => points.reduce((sum, p) => sum + p.probabilities[e], 0));
  const caption = document.createElement("figcaption");
  caption.innerHTML = "<strong></strong> ";
  caption.firstChild.textContent = t("track", { id });
  caption.append(t("trackCaption", {
    n: points.length, t0: points[0].time_s.toFixed(1), t1: points[points.length - 1].time_s.toFixed(1),
    emotion: emotionName(vocab.labels[mean.indexOf(Math.max(...mean))]),
  }));
  figure.prepend(caption);
  figure.append(legend);
  return figure;
}

function renderVideo() {
  if (!video || $("video-results").hidden) return;
  const { frames } = video.timeline;
  const tracks = tracksOf(video.timeline);
  $("video-summary").textContent = t("videoDone", { frames: frames.length, tracks: tracks.size });
  const charts = $("video-charts");
  charts.innerHTML = "";
  for (const [id, points] of tracks) charts.append(trackChart(id, points, frames));
}

// ---------------------------------------------------------------- webcam mode
let stream = null;
let running = false;

async function liveLoop() {
  const player = $("webcam-video");
  const canvas = $("webcam-canvas");
  const ctx = canvas.getContext("2d");
  const grab = document.createElement("canvas");
  const status = $("live-status");
  let frames = 0, faceTotal = 0;
  const recent = []; // [end time, round trip ms] of the last frames: achieved fps and round trip
  const tracker = new FaceTracker({ smoothFrames: Number($("smoothing").value) });
  $("smoothing").onchange = () => { tracker.smoothFrames = Number($("smoothing").value); };
  while (running) {
    if (player.readyState < 2 || !player.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    grab.width = player.videoWidth; grab.height = player.videoHeight;
    grab.getContext("2d").drawImage(player, 0, 0);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    blob.name = "frame.jpg";
    let faces = [];
    const sent = performance.now();
    try {
      faces = tracker.update(JSON.parse(await (await post("/analyze", { image: blob })).text()));
      if (lastError) showError("");
    } catch (error) {
      failed(error);
      await new Promise((r) => setTimeout(r, 500));
    }
    if (!running) break;
    const now = performance.now();
    recent.push([now, now - sent]);
    if (recent.length > 10) recent.shift();
    canvas.width = grab.width; canvas.height = grab.height;
    ctx.drawImage(grab, 0, 0);
    drawFaces(ctx, faces, 1);
    renderCards($("webcam-faces"), faces, grab, false);
    frames += 1; faceTotal += faces.length;
    // fps over the last frames (the first frame's span is its own round trip)
    const span = recent.length > 1 ? now - recent[0][0] : recent[0][1];
    const fps = (1000 * Math.max(recent.length - 1, 1)) / span;
    const rtt = recent.reduce((sum, r) => sum + r[1], 0) / recent.length;
    Object.assign(status.dataset, {
      frames, faces: faceTotal, fps: fps.toFixed(2), rtt: rtt.toFixed(0),
      last: faces.map((f) => f.emotion).join(","), tracks: faces.map((f) => f.track_id).join(","),
      tracksStarted: tracker.tracksStarted, smoothing: tracker.smoothFrames,
    });
    status.textContent = t("liveStatus", {
      frames, faces: faces.length, fps: fps.toFixed(1), rtt: rtt.toFixed(0), tracks: tracker.tracksStarted,
    }) + (faces.length ? ` (${faces.map(label).join(", ")})` : "");
  }
}

$("webcam-start").addEventListener("click", async () => {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return showError("noCamera");
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    return showError("cameraUnavailable", { message: error.message });
  }
  const player = $("webcam-video");
  player.srcObject = stream;
  await player.play();
  running = true;
  $("webcam-start").disabled = true;
  $("webcam-stop").disabled = false;
  liveLoop();
});

$("webcam-stop").addEventListener("click", () => {
  running = false;
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("webcam-start").disabled = false;
  $("webcam-stop").disabled = true;
});

// ---------------------------------------------------------------- tabs, language, start-up
const MODES = ["photo", "video", "webcam"];
function showTab(name) {
  for (const mode of MODES) {
    $(`${mode}-mode`).hidden = mode !== name;
    $(`tab-${mode}`).classList.toggle("active", mode === name);
    $(`tab-${mode}`).setAttribute("aria-selected", String(mode === name));
  }
}
MODES.forEach((mode, i) => {
  $(`tab-${mode}`).addEventListener("click", () => showTab(mode));
  // arrow keys move between the tabs, as in a native tab list
  $(`tab-${mode}`).addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step) return;
    const next = MODES[(i + step + MODES.length) % MODES.length];
    showTab(next);
    $(`tab-${next}`).focus();
  });
});

$("language").addEventListener("change", () => {
  translatePage();
  if (lastError) showError(...lastError);
  if (modelTag) $("model").textContent = t("model", { tag: modelTag });
  renderPhoto();
  renderVideo();
});

let modelTag = "";
fetch("vocabulary.json")
  .then((r) => r.json())
  .then((v) => {
    vocab = v;
    document.body.dataset.ready = "true"; // for the browser tests: labels and colours loaded
  })
  .catch(() => {});
fetch("/model_info", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })
  .then((r) => r.json())
  .then((info) => {
    const views = info.test_time_augmentation ? `, ${info.test_time_augmentation}` : "";
    modelTag = `${info.tag}${views}`;
    $("model").textContent = t("model", { tag: modelTag });
  })
  .catch(() => {});
translatePage();
