// The room's socket (lib/socket.js), opened on the pre-join screen (embedded: at the
// join). Room modules register the events they handle when they are made; the handlers
// are attached when it opens.
import { call, connect } from "../lib/socket.js";

export function createSignalling({ token }) {
  const handlers = [];
  const link = { socket: null };
  return {
    get socket() {
      return link.socket;
    },
    get connected() {
      return Boolean(link.socket && link.socket.connected);
    },
    on(event, handler) {
      handlers.push([event, handler]);
      if (link.socket) link.socket.on(event, handler);
    },
    open() {
      link.socket = connect({ token });
      for (const [event, handler] of handlers) link.socket.on(event, handler);
      return link.socket;
    },
    call(event, data) {
      return call(link.socket, event, data);
    },
  };
}
