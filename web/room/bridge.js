// The room's link to whoever embeds it (docs/embedding.md): its events (telemed:joined,
// telemed:left, telemed:ended, telemed:permission_denied, telemed:error) go to the host
// page at `origin` with postMessage (the server checked it against
// TELEMED_EMBED_ORIGINS), or, in a mobile app's WebView, to its native bridge (iOS
// window.webkit.messageHandlers.telemed, Android window.TelemedAndroid); commands
// (telemed:leave, telemed:mute, telemed:camera, telemed:audio_only) come back from that host only, or from
// the app through window.telemedCommand().
export function createBridge({ consultationId, embedded, hostOrigin }) {
  return {
    tell(type, detail = {}) {
      const message = { type, consultationId, ...detail };
      if (hostOrigin) {
        window.parent.postMessage(message, hostOrigin);
      } else if (embedded) {
        const webkit = window.webkit && window.webkit.messageHandlers && window.webkit.messageHandlers.telemed;
        if (webkit) webkit.postMessage(message);
        if (window.TelemedAndroid) window.TelemedAndroid.postMessage(JSON.stringify(message));
      }
    },
    listen(command) {
      window.addEventListener("message", (event) => {
        if (!hostOrigin || event.origin !== hostOrigin || !event.data) return;
        command(event.data);
      });
      // A WebView (no host frame) sends the same commands with
      // evaluateJavaScript("telemedCommand({type: 'telemed:mute', muted: true})").
      if (embedded && !hostOrigin) window.telemedCommand = (data) => command(data || {});
    },
  };
}
