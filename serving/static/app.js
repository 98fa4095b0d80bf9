// Web page of the emotion service: photo upload and live webcam mode, both calling POST /analyze.
// In webcam mode a FaceTracker (below) gives each face a stable id across frames and can smooth
// its probabilities over the last few frames, so labels do not flicker.
"use strict";

const COLOURS = {
  angry: "rgb(230,40,40)", disgust: "rgb(120,170,40)", fear: "rgb(150,70,200)",
  happy: "rgb(250,200,0)", neutral: "rgb(200,200,200)", sad: "rgb(50,110,230)", surprise: "rgb(250,120,20)",
};
let translations = { en: {} };
const $ = (id) => document.getElementById(id);

function label(face) {
  const lang = $("language").value;
  const name = (translations[lang] || {})[face.emotion] || face.emotion;
  const id = face.track_id === undefined ? "" : `#${face.track_id} `;
  return `${id}${name} ${Math.round(100 * face.probabilities[face.emotion])}%`;
}

// ---------------------------------------------------------------- face tracking
// The same algorithm as emotion_recognition/face_tracking.py (see docs/video.md): greedy matching
// on IoU with each live track's last box; an unmatched face starts a new track (ids 1, 2, ...);
// a track with no face keeps its id for up to maxMissed more frames. With smoothFrames N > 1 a
// face's probabilities are the mean of its track's last N observed vectors, its emotion their argmax.

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

function showError(message) { $("error").textContent = message || ""; }

async function errorMessage(response) {
  // BentoML answers errors as {"error": ...} or [{"error": ...}].
  try {
    const body = await response.json();
    const item = Array.isArray(body) ? body[0] : body;
    return `${response.status}: ${(item && item.error) || JSON.stringify(body)}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function analyze(blob, filename) {
  const form = new FormData();
  form.append("image", blob, filename);
  const response = await fetch("/analyze", { method: "POST", body: form });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function drawFaces(ctx, faces, scale) {
  const lineWidth = Math.max(2, Math.round(ctx.canvas.width / 320));
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px sans-serif`;
  ctx.textBaseline = "top";
  for (const face of faces) {
    const { x, y, w, h } = face.box;
    const colour = COLOURS[face.emotion] || "white";
    ctx.lineWidth = lineWidth;
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
  }
}

// ---------------------------------------------------------------- photo mode
let lastPhoto = null; // {bitmap, faces}

function renderPhoto() {
  if (!lastPhoto) return;
  const { bitmap, faces } = lastPhoto;
  const canvas = $("photo-canvas");
  const scale = Math.min(1, 900 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  drawFaces(ctx, faces, scale);
  const list = $("results");
  list.innerHTML = "";
  for (const face of faces) {
    const li = document.createElement("li");
    li.textContent = `${label(face)} at (${face.box.x}, ${face.box.y}, ${face.box.w}x${face.box.h}), face confidence ${face.confidence.toFixed(2)}`;
    li.dataset.emotion = face.emotion;
    list.appendChild(li);
  }
  $("photo-status").textContent = faces.length ? `${faces.length} face(s)` : "no face found";
}

$("photo-input").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  showError("");
  $("photo-status").textContent = "analysing…";
  $("results").innerHTML = "";
  try {
    const faces = await analyze(file, file.name);
    // The server honours EXIF orientation; imageOrientation "from-image" makes the browser agree.
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    lastPhoto = { bitmap, faces };
    renderPhoto();
  } catch (error) {
    $("photo-status").textContent = "";
    showError(error.message);
  }
});

// ---------------------------------------------------------------- webcam mode
let stream = null;
let running = false;

async function liveLoop() {
  const video = $("webcam-video");
  const canvas = $("webcam-canvas");
  const ctx = canvas.getContext("2d");
  const grab = document.createElement("canvas");
  const status = $("live-status");
  let frames = 0, faceTotal = 0, started = performance.now();
  const tracker = new FaceTracker({ smoothFrames: Number($("smoothing").value) });
  $("smoothing").onchange = () => { tracker.smoothFrames = Number($("smoothing").value); };
  while (running) {
    if (video.readyState < 2 || !video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    grab.width = video.videoWidth; grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    let faces = [];
    try {
      faces = tracker.update(await analyze(blob, "frame.jpg"));
      showError("");
    } catch (error) {
      showError(error.message);
      await new Promise((r) => setTimeout(r, 500));
    }
    if (!running) break;
    canvas.width = grab.width; canvas.height = grab.height;
    ctx.drawImage(grab, 0, 0);
    drawFaces(ctx, faces, 1);
    frames += 1; faceTotal += faces.length;
    const fps = frames / ((performance.now() - started) / 1000);
    status.dataset.frames = String(frames);
    status.dataset.faces = String(faceTotal);
    status.dataset.last = faces.map((f) => f.emotion).join(",");
    status.dataset.tracks = faces.map((f) => f.track_id).join(",");
    status.dataset.tracksStarted = String(tracker.tracksStarted);
    status.dataset.smoothing = String(tracker.smoothFrames);
    status.textContent = `frames analysed: ${frames} · faces in last frame: ${faces.length}` +
      (faces.length ? ` (${faces.map(label).join(", ")})` : "") + ` · ${fps.toFixed(1)} FPS` +
      ` · faces tracked: ${tracker.tracksStarted}`;
  }
}

$("webcam-start").addEventListener("click", async () => {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("this browser gives no camera access here (needs HTTPS or localhost)");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    showError(`camera not available: ${error.message}`);
    return;
  }
  const video = $("webcam-video");
  video.srcObject = stream;
  await video.play();
  running = true;
  $("webcam-start").disabled = true;
  $("webcam-stop").disabled = false;
  liveLoop();
});

$("webcam-stop").addEventListener("click", () => {
  running = false;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("webcam-start").disabled = false;
  $("webcam-stop").disabled = true;
});

// ---------------------------------------------------------------- tabs, language, model info
function showTab(name) {
  $("photo-mode").hidden = name !== "photo";
  $("webcam-mode").hidden = name !== "webcam";
  $("tab-photo").classList.toggle("active", name === "photo");
  $("tab-webcam").classList.toggle("active", name === "webcam");
}
$("tab-photo").addEventListener("click", () => showTab("photo"));
$("tab-webcam").addEventListener("click", () => showTab("webcam"));
$("language").addEventListener("change", renderPhoto);

fetch("/model_info", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })
  .then((r) => r.json())
  .then((info) => {
    translations = info.translations || translations;
    const views = info.test_time_augmentation ? `, ${info.test_time_augmentation}` : "";
    $("model").textContent = `model ${info.tag}${views}`;
  })
  .catch(() => {});
