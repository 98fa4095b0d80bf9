// Web page of the emotion service: photo upload and live webcam mode, both calling POST /analyze.
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
  return `${name} ${Math.round(100 * face.probabilities[face.emotion])}%`;
}

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
  while (running) {
    if (video.readyState < 2 || !video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    grab.width = video.videoWidth; grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    let faces = [];
    try {
      faces = await analyze(blob, "frame.jpg");
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
    status.textContent = `frames analysed: ${frames} · faces in last frame: ${faces.length}` +
      (faces.length ? ` (${faces.map(label).join(", ")})` : "") + ` · ${fps.toFixed(1)} FPS`;
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
