// The user's camera and microphone: getUserMedia (sound only when the camera fails), the
// check before joining (preview, level meter, the choice of devices, a speaker test),
// guidance in the user's words when access is denied, no device is found or it is busy,
// the mute and camera switches, the front/back camera switch of a phone, and what the
// browser gave reported to the room (media:report), so the others see it in words. Owns
// the local stream.
import { $ } from "./view.js";

function permissionOf(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no_device";
    case "NotReadableError":
    case "AbortError":
      return "busy";
    default:
      return "unknown";
  }
}

// The microphone's level, so that the user sees it works before speaking to anyone.
function createMeter(state) {
  const meter = { audio: null, analyser: null, source: null };
  const tick = () => {
    const samples = new Float32Array(meter.analyser.fftSize);
    meter.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const value of samples) sum += value * value;
    const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    $("level").value = level;
    state.micLevel = Math.max(state.micLevel, level);
    requestAnimationFrame(tick);
  };
  return {
    listen(stream) {
      if (!meter.audio) {
        meter.audio = new AudioContext();
        meter.analyser = meter.audio.createAnalyser();
        meter.analyser.fftSize = 512;
        meter.audio.resume().finally(tick);
      }
      if (meter.source) meter.source.disconnect();
      meter.source = meter.audio.createMediaStreamSource(stream);
      meter.source.connect(meter.analyser);
    },
  };
}

export function createDevices({ state, view, signalling, consultationId }) {
  const { TEXT } = view;
  const local = { stream: null };
  const meter = createMeter(state);

  // What the browser gave, and what the user has switched off.
  function report() {
    if (!signalling.connected) return; // the next join reports it
    signalling.call("media:report", {
      consultation_id: consultationId,
      camera: state.camera,
      microphone: state.microphone,
      camera_enabled: !state.cameraOff,
      microphone_enabled: !state.muted,
    });
  }

  function setMuted(muted) {
    state.muted = muted;
    if (local.stream) local.stream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    $("mute").setAttribute("aria-pressed", String(muted));
    report();
  }

  function setCameraOff(off) {
    state.cameraOff = off;
    if (local.stream) local.stream.getVideoTracks().forEach((t) => { t.enabled = !off; });
    $("camera-toggle").setAttribute("aria-pressed", String(off));
    report();
  }

  // What went wrong, and what to do about it, in the user's words.
  function explainDevices() {
    const problem = [state.camera, state.microphone].find((p) => p !== "granted");
    const text = problem && TEXT[problem] ? (state.microphone === "granted" ? `${TEXT.audioOnly} ${TEXT[problem]}` : TEXT[problem]) : "";
    $("guidance").textContent = text;
    $("camera-toggle").disabled = state.camera !== "granted";
    $("mute").disabled = state.microphone !== "granted";
  }

  // A device chosen in the check is asked for exactly; the browser's default otherwise.
  async function acquire({ cameraId, microphoneId } = {}) {
    stop();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      state.camera = state.microphone = "unsupported";
      return;
    }
    const audio = microphoneId ? { deviceId: { exact: microphoneId } } : true;
    const video = cameraId ? { deviceId: { exact: cameraId } } : true;
    try {
      local.stream = await navigator.mediaDevices.getUserMedia({ video, audio });
      state.camera = state.microphone = "granted";
    } catch (error) {
      state.camera = permissionOf(error);
      try {
        // Without the camera, the consultation can still go on with sound only.
        local.stream = await navigator.mediaDevices.getUserMedia({ audio });
        state.microphone = "granted";
      } catch (audioError) {
        state.microphone = permissionOf(audioError);
      }
    }
    $("local").srcObject = local.stream;
    setMuted(state.muted);
    setCameraOff(state.cameraOff);
    if (local.stream && local.stream.getAudioTracks().length) meter.listen(local.stream);
    explainDevices();
  }

  // Labels are known only after permission: the selects are filled after getUserMedia.
  async function listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, select, word] of [
      ["videoinput", $("camera-select"), TEXT.cameraDevice],
      ["audioinput", $("microphone-select"), TEXT.microphoneDevice],
    ]) {
      const track = local.stream && local.stream.getTracks().find((t) => `${t.kind}input` === kind);
      const current = track ? track.getSettings().deviceId : "";
      const found = devices.filter((d) => d.kind === kind && d.deviceId);
      select.replaceChildren(
        ...found.map((device, n) => {
          const option = new Option(device.label || `${word} ${n + 1}`, device.deviceId);
          option.selected = device.deviceId === current;
          return option;
        }),
      );
      select.disabled = found.length === 0;
    }
  }

  async function changeDevice() {
    $("join").disabled = true;
    await acquire({ cameraId: $("camera-select").value, microphoneId: $("microphone-select").value });
    await listDevices();
    $("join").disabled = false;
    state.phase = "prejoin";
  }

  // The camera light goes off.
  function stop() {
    if (local.stream) local.stream.getTracks().forEach((track) => track.stop());
    local.stream = null;
  }

  // A short tone through the speakers (or headphones): the user hears whether sound works.
  function testSpeaker() {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 660;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.8);
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.8);
    tone.onended = () => audio.close();
    state.speakerTests += 1;
  }

  // The next camera (a phone's front and back): its track replaces the current one in
  // the preview and, through `replaceVideo`, on the media connection.
  async function switchCamera(replaceVideo) {
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    const current = local.stream && local.stream.getVideoTracks()[0];
    if (!current || cameras.length < 2) return;
    const at = cameras.findIndex((d) => d.deviceId === current.getSettings().deviceId);
    const next = cameras[(at + 1) % cameras.length];
    const fresh = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: next.deviceId } } });
    const track = fresh.getVideoTracks()[0];
    track.enabled = !state.cameraOff;
    await replaceVideo(track);
    local.stream.removeTrack(current);
    current.stop();
    local.stream.addTrack(track);
    $("local").srcObject = local.stream;
  }

  async function offerSwitch() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    $("camera-switch").hidden = cameras.length < 2 || state.camera !== "granted";
  }

  $("mute").addEventListener("click", () => setMuted(!state.muted));
  $("camera-toggle").addEventListener("click", () => setCameraOff(!state.cameraOff));
  $("speaker-test").addEventListener("click", testSpeaker);

  return {
    get stream() {
      return local.stream;
    },
    acquire,
    listDevices,
    // The check before joining: the choice of another camera or microphone.
    offerChoice() {
      $("camera-select").addEventListener("change", changeDevice);
      $("microphone-select").addEventListener("change", changeDevice);
    },
    report,
    setMuted,
    setCameraOff,
    stop,
    switchCamera,
    offerSwitch,
  };
}
