// The live page: streams the microphone (or a file, at real-time pace) to /stream as 16 kHz float32 frames
// and draws the events: the current (smoothed) emotion and a timeline of class probabilities per window.
"use strict";

const RATE = 16000, FRAME = 512, SHOWN_WINDOWS = 60;
const COLOURS = {neutral: "#9e9e9e", calm: "#4fc3f7", happy: "#fdd835", sad: "#3949ab", angry: "#e53935",
                 fearful: "#8e24aa", disgust: "#43a047", surprised: "#fb8c00"};
const SPARE_COLOURS = ["#00897b", "#6d4c41", "#d81b60", "#7cb342", "#5e35b1", "#039be5"];

const $ = (id) => document.getElementById(id);
let classes = [];
let windows = [];  // window events shown on the timeline, oldest first
let stopCurrent = null;  // ends the running stream

function colour(name) {
  return COLOURS[name] || SPARE_COLOURS[classes.indexOf(name) % SPARE_COLOURS.length];
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setRunning(running) {
  $("microphone").disabled = running;
  $("file").disabled = running;
  $("stop").disabled = !running;
}

async function describeModel() {
  try {
    const health = await (await fetch("/health")).json();
    classes = health.classes;
    $("model").textContent = `${health.model}: ${health.window_seconds} s windows, classes ${classes.join(", ")}`;
  } catch (error) {
    $("model").textContent = "the service does not answer /health";
  }
  $("legend").replaceChildren(...classes.map((name) => {
    const item = document.createElement("li");
    const chip = document.createElement("span");
    chip.style.background = colour(name);
    item.append(chip, name);
    return item;
  }));
  drawTimeline();
}

function showCurrent(event) {
  const now = event.smoothed;
  if (!now || !now.emotion) {
    $("emotion").textContent = event.no_speech ? "no speech" : "–";
    $("confidence").textContent = "";
    return;
  }
  $("emotion").textContent = now.emotion;
  $("emotion").style.color = colour(now.emotion);
  $("confidence").textContent = `${Math.round(100 * now.confidence)}% ` +
    (event.no_speech ? "(last window: no speech)" : `(last window: ${event.emotion})`);
  $("bars").replaceChildren(...classes.map((name) => {
    const item = document.createElement("li");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${100 * now.probabilities[name]}%`;
    bar.style.background = colour(name);
    const label = document.createElement("span");
    label.textContent = name;
    const value = document.createElement("span");
    value.textContent = now.probabilities[name].toFixed(2);
    const track = document.createElement("div");
    track.append(bar);
    item.append(label, track, value);
    return item;
  }));
}

function drawTimeline() {
  const canvas = $("timeline"), context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height - 20, column = width / SHOWN_WINDOWS;
  context.clearRect(0, 0, canvas.width, canvas.height);
  const shown = windows.slice(-SHOWN_WINDOWS);
  shown.forEach((event, index) => {
    const x = width - (shown.length - index) * column;
    if (event.no_speech) {
      context.fillStyle = "#e6e6e6";
      context.fillRect(x, 0, column - 1, height);
      return;
    }
    let y = height;
    for (const name of classes) {
      const part = event.probabilities[name] * height;
      context.fillStyle = colour(name);
      context.fillRect(x, y - part, column - 1, part);
      y -= part;
    }
  });
  context.fillStyle = "#555";
  context.font = "12px system-ui, sans-serif";
  shown.forEach((event, index) => {
    if (index % 10 === 0) {
      context.fillText(`${event.start.toFixed(1)} s`, width - (shown.length - index) * column, canvas.height - 5);
    }
  });
  canvas.dataset.windows = String(windows.length);
}

function handle(event) {
  if (event.type === "window") {
    windows.push(event);
    if (windows.length > 10 * SHOWN_WINDOWS) windows = windows.slice(-SHOWN_WINDOWS);
    showCurrent(event);
    drawTimeline();
  } else if (event.type === "summary") {
    setStatus(event.no_speech ? `done: ${event.duration.toFixed(1)} s, no speech`
      : `done: ${event.duration.toFixed(1)} s, overall ${event.emotion} (${Math.round(100 * event.confidence)}%)`);
  } else if (event.type === "error") {
    setStatus(`error: ${event.error}`, true);
  }
}

function openStream() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/stream`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      socket.send(JSON.stringify({sample_rate: RATE, format: "float32"}));
      resolve(socket);
    };
    socket.onerror = () => reject(new Error("cannot open /stream"));
    socket.onmessage = (message) => handle(JSON.parse(message.data));
    socket.onclose = (close) => {
      setRunning(false);
      if (close.code !== 1000 && !$("status").classList.contains("error")) {
        setStatus(`stream closed (code ${close.code})`, true);
      }
    };
  });
}

function finish(socket) {
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({end: true}));
}

async function startMicrophone() {
  setRunning(true);
  try {
    const media = await navigator.mediaDevices.getUserMedia(
      {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    const context = new AudioContext();
    await context.audioWorklet.addModule("/static/capture-worklet.js");
    const capture = new AudioWorkletNode(context, "capture-16k", {numberOfInputs: 1, numberOfOutputs: 0});
    const socket = await openStream();
    capture.port.onmessage = (message) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(message.data);
    };
    context.createMediaStreamSource(media).connect(capture);
    setStatus(`listening (${context.sampleRate} Hz microphone, sent at 16 kHz)`);
    stopCurrent = () => {
      media.getTracks().forEach((track) => track.stop());
      context.close();
      finish(socket);
    };
  } catch (error) {
    setRunning(false);
    setStatus(`microphone: ${error.message}`, true);
  }
}

async function streamFile(file) {
  setRunning(true);
  try {
    // Decoded at 16 kHz by the browser (decodeAudioData resamples to its context's rate), then mixed to mono.
    const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await file.arrayBuffer());
    const samples = new Float32Array(decoded.length);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      decoded.getChannelData(c).forEach((value, i) => { samples[i] += value / decoded.numberOfChannels; });
    }
    const socket = await openStream();
    let stopped = false;
    stopCurrent = () => { stopped = true; };
    setStatus(`streaming ${file.name} (${decoded.duration.toFixed(1)} s) at real-time pace`);
    const started = performance.now();
    for (let first = 0; first < samples.length && !stopped; first += FRAME) {
      const due = started + 1000 * Math.min(first + FRAME, samples.length) / RATE;  // when it would have been heard
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(samples.slice(first, first + FRAME).buffer);
    }
    finish(socket);
  } catch (error) {
    setRunning(false);
    setStatus(`${file.name}: ${error.message}`, true);
  }
}

$("microphone").addEventListener("click", startMicrophone);
$("stop").addEventListener("click", () => { if (stopCurrent) stopCurrent(); });
$("file").addEventListener("change", (event) => {
  if (event.target.files.length) streamFile(event.target.files[0]);
  event.target.value = "";
});
describeModel();
