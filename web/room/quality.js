// How the call goes, measured and shown (docs/media.md, "Call quality"): every few
// seconds the page reads its connection's getStats figures (round trip, loss, jitter,
// the available bitrate, frames decoded per second, freezes, concealed audio), keeps the
// running totals in window.telemedRoom.stats, judges a level (good, weak, poor) from the
// last interval, and reports it to the server (media:stats), which tells the room each
// side's level (media:quality). Levels are shown in words, not only colours.
import { $ } from "./view.js";

const EVERY_MS = 2000;
const LEVELS = ["good", "weak", "poor"];
// The worse level whose threshold a figure passes (the figures of one interval).
const THRESHOLDS = [
  // [figure, weak from, poor from, higher is worse]
  ["rtt_ms", 400, 1000, true],
  ["loss", 0.03, 0.1, true],
  ["concealed", 0.03, 0.1, true],
  ["video_fps", 15, 5, false],
];

export function judge(figures) {
  let level = 0;
  for (const [name, weak, poor, higherWorse] of THRESHOLDS) {
    const value = figures[name];
    if (value === null || value === undefined) continue;
    const worse = (limit) => (higherWorse ? value >= limit : value < limit);
    if (worse(poor)) level = Math.max(level, 2);
    else if (worse(weak)) level = Math.max(level, 1);
  }
  return LEVELS[level];
}

// The totals of one getStats report: counters only grow, so an interval is a difference.
function totals(report) {
  const sum = {
    at: performance.now(), framesDecoded: 0, freezeCount: 0, totalFreezesDuration: 0,
    concealedSamples: 0, totalSamplesReceived: 0, packetsReceived: 0, packetsLost: 0,
    jitter: null, rtt: null, availableOutgoingBitrate: null, relay: false, videoStreams: 0,
  };
  let pairId = null;
  const candidates = {};
  report.forEach((stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) pairId = stat.selectedCandidatePairId;
    if (stat.type === "local-candidate") candidates[stat.id] = stat;
  });
  report.forEach((stat) => {
    if (stat.type === "inbound-rtp") {
      sum.packetsReceived += stat.packetsReceived || 0;
      sum.packetsLost += Math.max(0, stat.packetsLost || 0);
      if (stat.jitter !== undefined) sum.jitter = Math.max(sum.jitter || 0, stat.jitter);
      if (stat.kind === "video") {
        sum.videoStreams += 1;
        sum.framesDecoded += stat.framesDecoded || 0;
        sum.freezeCount += stat.freezeCount || 0;
        sum.totalFreezesDuration += stat.totalFreezesDuration || 0;
      } else if (stat.kind === "audio") {
        sum.concealedSamples += stat.concealedSamples || 0;
        sum.totalSamplesReceived += stat.totalSamplesReceived || 0;
      }
    }
    if (stat.type === "candidate-pair" && (stat.id === pairId || (!pairId && stat.nominated && stat.state === "succeeded"))) {
      if (stat.currentRoundTripTime !== undefined) sum.rtt = stat.currentRoundTripTime;
      if (stat.availableOutgoingBitrate !== undefined) sum.availableOutgoingBitrate = stat.availableOutgoingBitrate;
      const local = candidates[stat.localCandidateId];
      sum.relay = Boolean(local && local.candidateType === "relay");
    }
  });
  return sum;
}

// The figures of the interval between two totals (null where nothing was measured).
export function interval(before, now, { receivingVideo }) {
  const seconds = (now.at - before.at) / 1000;
  const packets = now.packetsReceived - before.packetsReceived + (now.packetsLost - before.packetsLost);
  const samples = now.totalSamplesReceived - before.totalSamplesReceived;
  return {
    rtt_ms: now.rtt === null ? null : Math.round(now.rtt * 1000),
    loss: packets > 0 ? Math.max(0, now.packetsLost - before.packetsLost) / packets : null,
    jitter_ms: now.jitter === null ? null : Math.round(now.jitter * 1000),
    available_bitrate: now.availableOutgoingBitrate === null ? null : Math.round(now.availableOutgoingBitrate),
    video_fps: receivingVideo && now.videoStreams > 0 && seconds > 0
      ? (now.framesDecoded - before.framesDecoded) / seconds : null,
    concealed: samples > 0 ? (now.concealedSamples - before.concealedSamples) / samples : null,
    freezes: now.freezeCount,
    freeze_seconds: Math.round(now.totalFreezesDuration * 1000) / 1000,
    relay: now.relay,
  };
}

export function createQuality({ state, view, signalling, media, consultationId }) {
  const { TEXT } = view;
  let last = null;

  // One's own level always, in the top bar; advice, and the other side's level, only
  // when it is not good.
  function show() {
    const own = state.levels[state.userId];
    $("link-level").hidden = !own;
    if (own) {
      $("link-level").textContent = TEXT[`level_${own}`];
      $("link-level").dataset.level = own;
    }
    const lines = [];
    for (const [userId, level] of Object.entries(state.levels)) {
      if (level === "good") continue;
      const mine = userId === state.userId;
      const who = mine ? "" : view.roleName((state.others[userId] || {}).role);
      lines.push(TEXT[`quality_${level}${mine ? "" : "_other"}`].replace("{who}", who));
    }
    $("quality").textContent = lines.join(" ");
    $("quality").dataset.level = own || "";
  }

  async function measure() {
    const link = media.link;
    if (!link || state.phase !== "joined") {
      last = null;
      return;
    }
    const now = totals(await link.pc.getStats());
    state.stats = now;
    if (last && now.at > last.at) {
      const mine = state.receiving[state.userId];
      const figures = interval(last, now, { receivingVideo: !mine || mine.video });
      const level = judge(figures);
      state.figures = figures;
      signalling
        .call("media:stats", { consultation_id: consultationId, level, ...figures })
        .catch(() => {});
    }
    last = now;
  }

  signalling.on("media:quality", (event) => {
    if (event.consultation_id !== consultationId) return;
    state.levels[event.user_id] = event.level;
    show();
  });
  setInterval(() => measure().catch((error) => console.debug("stats:", error)), EVERY_MS);
  return { show };
}
