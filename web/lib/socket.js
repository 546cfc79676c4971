// The one Socket.IO client of every page (docs/realtime.md): how a page connects (its
// session cookie, or the token it was given) and the one way it asks the server
// something. call() resolves with the server's ack, {ok: true, data} or {ok: false,
// error}; a call the server does not answer in time (or made with no socket) resolves
// as an error of the same shape with the code "unavailable". It never rejects.
import { io } from "/static/vendor/socket.io/socket.io.esm.min.js";

// How long an ack may take: long enough for a media offer on a loaded server.
export const ACK_TIMEOUT_MS = 15000;

export function connect({ token = null } = {}) {
  const socket = io({
    auth: token ? { token } : undefined,
    transports: ["websocket"],
    reconnectionDelay: 500,
    reconnectionDelayMax: 2000,
  });
  // The device is back on a network: connect now rather than when the back-off says.
  window.addEventListener("online", () => {
    console.debug("socket: back online", socket.active, socket.connected);
    if (socket.active && !socket.connected) socket.disconnect().connect();
  });
  return socket;
}

const unavailable = (message) => ({ ok: false, error: { code: "unavailable", message, details: {} } });

export async function call(socket, event, data) {
  if (!socket) return unavailable("not connected");
  try {
    return await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, data);
  } catch (error) {
    return unavailable(String(error));
  }
}

// For code that would rather throw: the ack's data, or the error as an exception.
export class Unanswered extends Error {} // the server did not answer: try again later
export class Refused extends Error {
  constructor(error) {
    super(error.message);
    this.code = error.code;
    this.details = error.details || {};
  }
}

export function dataOf(answer) {
  if (answer.ok) return answer.data;
  throw answer.error.code === "unavailable" ? new Unanswered(answer.error.message) : new Refused(answer.error);
}
