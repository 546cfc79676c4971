// The room's media connection (lib/rtc.js), made anew on each join: the local tracks
// sent, the others' tracks shown as they come (labelled with their user by the server's
// rtc:offer), frames counted for the tests and the benchmark, and a connection that
// breaks reported as a network drop (`onBroken`), which the socket may not have noticed
// yet. Owns the peer connection and the remote elements.
import { dataOf } from "../lib/socket.js";
import { PeerLink, hasTurn, relayAsked } from "../lib/rtc.js";
import { step } from "./state.js";
import { $ } from "./view.js";

// How long a "disconnected" connection may take to come back by itself.
const DISCONNECTED_GRACE_MS = 5000;
// How long a connection that was receiving may receive nothing at all while someone
// else is present and sending before it counts as broken (watchInbound): the path died
// with the device's address, which the browser notices many seconds later. Nothing at
// all for that long is no weak link: audio alone comes 50 times a second, and a muted
// microphone sends silence. Looked at every WATCH_MS.
const STALLED_MS = 1500;
// The same for a page that sends nothing (no camera or microphone): no reports come
// from the server then, and the others' media stopping looks the same as the path
// dying until the server says who stopped.
const STALLED_SILENT_MS = 3000;
const WATCH_MS = 250;
// How long a connection kept through a dropped socket may take to carry media again once
// the socket is back (the device kept its address, so the same path works when the
// network does), before a new connection is made instead.
const RESUME_MS = 1500;

export function createMedia({ state, view, signalling, devices, consultationId, onBroken, onInterrupted }) {
  const media = { link: null, labels: {} }; // labels: mid → {mid, user_id, kind, …}

  function countFrames(video) {
    const tick = () => {
      if (state.firstRemoteFrameAt === null) state.firstRemoteFrameAt = performance.now();
      state.remoteFrames += 1;
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }

  function showTrack(event) {
    state.remoteTracks += 1;
    const label = media.labels[event.transceiver.mid] || {};
    const element = document.createElement(event.track.kind === "video" ? "video" : "audio");
    element.autoplay = true;
    element.srcObject = new MediaStream([event.track]);
    element.dataset.mid = event.transceiver.mid;
    element.dataset.userId = label.user_id || "";
    if (event.track.kind === "video") {
      element.playsInline = true;
      element.muted = true; // the sound plays through its own element
      element.setAttribute("aria-label", view.roleName((state.others[label.user_id] || {}).role));
      countFrames(element);
    } else {
      element.play().catch(() => {});
    }
    $("remotes").appendChild(element);
  }

  function watch(link, connectionState) {
    if (link !== media.link) return;
    if (connectionState === "connected") {
      step(state, "connected");
      if (state.interrupted[state.userId]) {
        state.interrupted[state.userId] = false;
        onInterrupted(false);
      }
    }
    if (connectionState === "failed") onBroken();
    if (connectionState === "disconnected") {
      // Often back by itself within seconds (the same path): say so meanwhile.
      state.mediaInterrupted += 1;
      state.interrupted[state.userId] = true;
      onInterrupted(true);
      setTimeout(() => {
        if (link === media.link && link.connectionState === "disconnected") onBroken();
      }, DISCONNECTED_GRACE_MS);
    }
  }

  // One candidate of `link` to the server (null: the end of gathering). A refusal
  // (a connection replaced meanwhile, a rate limit) is logged: the connection's own
  // checks decide whether it comes up.
  function trickle(link, candidate) {
    if (link !== media.link) return;
    const message = {
      consultation_id: consultationId,
      candidate: candidate ? candidate.candidate : "",
      sdp_mid: candidate ? candidate.sdpMid : null,
      sdp_mline_index: candidate ? candidate.sdpMLineIndex : null,
      username_fragment: candidate ? candidate.usernameFragment : null,
    };
    signalling
      .call("rtc:candidate", message)
      .then(dataOf)
      .then(() => {
        state.trickled += 1;
      })
      .catch((error) => console.debug("rtc: candidate refused", error));
  }

  // Relay candidates only (docs/media.md, "STUN and TURN"): asked for with ?ice=relay,
  // or taken on the page's own after a connection with every candidate never came up,
  // when there are TURN servers. A connection that the TURN servers failed is not tried
  // again: the room says why (state.turn.failure), and a reload tries anew.
  const ice = { asked: relayAsked(), relay: relayAsked(), fallbacks: 0 };

  function unconnected(link, iceServers) {
    if (link !== media.link) return;
    const failure = link.turnFailure();
    state.turn = { relay: link.relay, fallbacks: ice.fallbacks, failure };
    if (failure) {
      close();
      const text = view.TEXT[failure === "refused" ? "turnRefused" : "turnUnreachable"];
      view.say(text);
      view.notice(text); // stays when the status line moves on
      return;
    }
    if (!ice.asked && hasTurn(iceServers)) {
      ice.relay = !link.relay; // the other way next: relay after direct, and back
      if (ice.relay) ice.fallbacks += 1;
    }
    onBroken();
  }

  // What came in on the connection so far: RTP packets of the others' media, and bytes
  // of anything (media, and the server's RTCP: its reports on what this page sends come
  // every second or so, whoever else sends or not).
  async function received(link) {
    let packets = 0;
    let bytes = 0;
    (await link.pc.getStats()).forEach((stat) => {
      if (stat.type === "inbound-rtp") packets += stat.packetsReceived || 0;
      if (stat.type === "transport") bytes += stat.bytesReceived || 0;
    });
    return { packets, bytes };
  }

  async function inboundPackets(link) {
    return (await received(link)).packets;
  }

  // Whether someone else in the room is sending: present, and not interrupted.
  function othersSending() {
    return Object.entries(state.others).some(
      ([userId, other]) => userId !== state.userId && other.present && !state.interrupted[userId],
    );
  }

  function stalledAfter(link) {
    return link.pc.getSenders().some((sender) => sender.track) ? STALLED_MS : STALLED_SILENT_MS;
  }

  // A connection on which nothing at all comes any more (not the others' media, nor the
  // server's reports) while the others send is broken. Only the others' media stopping
  // is not: they dropped, and the server says so (media:connection) within about 1.5 s.
  function watchInbound(link) {
    let last = { packets: 0, bytes: 0 };
    let since = performance.now();
    const timer = setInterval(async () => {
      if (link !== media.link) return clearInterval(timer);
      const now = await received(link);
      const moving = now.packets !== last.packets || now.bytes !== last.bytes;
      if (moving || now.packets === 0 || !othersSending() || link.connectionState !== "connected") {
        last = now;
        since = performance.now();
      } else if (performance.now() - since >= stalledAfter(link) && link === media.link) {
        // Watched on: while the room reconnects anyway this changes nothing, and a
        // connection kept through that must be watched still.
        since = performance.now();
        if (state.phase !== "joined") return;
        state.stalls += 1;
        onBroken();
      }
    }, WATCH_MS);
  }

  function close() {
    if (media.link) media.link.close();
    media.link = null;
    $("remotes").replaceChildren();
  }

  return {
    close,
    // Another camera's track (a phone's front/back switch) on the current connection.
    async replaceVideo(track) {
      const pc = media.link && media.link.pc;
      const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === "video");
      if (sender) await sender.replaceTrack(track);
    },
    // The current connection (lib/rtc.js PeerLink), or null: for its statistics.
    get link() {
      return media.link;
    },
    // After the socket came back from a drop: whether the connection made before it
    // carries media again (then no new one is needed). `kept`: the server kept its side
    // (room:join's connection_kept).
    async resumes(kept) {
      const link = media.link;
      if (!link || !kept) return false;
      const until = performance.now() + RESUME_MS;
      const before = await inboundPackets(link);
      while (link === media.link && !link.closed) {
        const connection = link.connectionState;
        if (connection === "failed" || connection === "closed") return false;
        if (connection === "connected" && (!othersSending() || (await inboundPackets(link)) > before)) {
          console.debug("rtc: kept through the drop");
          state.kept += 1;
          return true;
        }
        if (performance.now() >= until) return false;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return false;
    },
    // A new connection (the first, or after a drop): the server replaces the old one.
    async connect(iceServers) {
      close();
      const stream = devices.stream;
      const relay = ice.relay && hasTurn(iceServers); // nothing to relay through otherwise
      const link = new PeerLink({
        iceServers,
        relay,
        stream,
        receiveVideo: !stream || state.camera !== "granted",
        onTrack: showTrack,
        onStateChange: (connectionState) => watch(link, connectionState),
        onUnconnected: () => unconnected(link, iceServers),
      });
      state.turn = { relay, fallbacks: ice.fallbacks, failure: null };
      media.link = link;
      watchInbound(link);
      await link.offer(
        async (sdp) => {
          step(state, "described");
          const answer = dataOf(await signalling.call("rtc:offer", { consultation_id: consultationId, sdp }));
          step(state, "answered");
          return answer.sdp;
        },
        (candidate) => trickle(link, candidate),
      );
    },
    // The server's rtc:offer names whose each track is (its mid) before it arrives.
    expect(tracks) {
      media.labels = Object.fromEntries(tracks.map((t) => [t.mid, t]));
    },
    // The server adds what this page receives: its offer, our answer.
    async answer(offer) {
      const link = media.link;
      if (!link) return;
      step(state, "offered");
      await link.answer(offer.sdp, async (sdp) => {
        dataOf(await signalling.call("rtc:answer", { consultation_id: consultationId, sdp }));
      });
    },
  };
}
