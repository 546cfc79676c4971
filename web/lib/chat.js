// One consultation's chat over a page's socket (docs/realtime.md, "Losing nothing"), the
// same for the app's consultation page and the video room. It keeps one message per
// `seq` (the server's increasing number per consultation) in `seq` order, whichever way
// a message came (history, live event, own ack); subscribes with the last `seq` held,
// page by page while `has_more`, and again after every reconnection; reports whether the
// server takes new messages (`writable`); and sends with a `client_id` that a resend of
// the same unsent text reuses, so the server stores it once. Drawing is the page's.
import { call } from "./socket.js";

export class Chat {
  // onMessage(message, index): a new message, at `index` in seq order (insert it there).
  // onWritable(writable): after each subscribe answer. onError(error): a refused or
  // unanswered subscribe ({code, message, details}).
  constructor({ socket, consultationId, onMessage, onWritable = () => {}, onError = () => {} }) {
    this.socket = socket;
    this.consultationId = consultationId;
    this.onMessage = onMessage;
    this.onWritable = onWritable;
    this.onError = onError;
    this.messages = []; // in seq order
    this.seqs = new Set();
    this.writable = null; // unknown until the first subscribe answers
    this.following = false;
    this.catching = null; // the subscribe loop under way, if any
    this.again = false; // asked to catch up while it ran: run once more
    this.unsent = null; // {body, clientId} of the last send that got no ok
    this.received = (message) => this.add(message);
    this.reconnected = () => this.catchUp();
    socket.on("chat:message_created", this.received);
  }

  get lastSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  // Subscribe now, and catch up after every reconnection from then on. Calling it
  // again does nothing more.
  follow() {
    if (this.following) return this.catching || Promise.resolve();
    this.following = true;
    this.socket.on("connect", this.reconnected);
    return this.catchUp();
  }

  close() {
    this.socket.off("chat:message_created", this.received);
    this.socket.off("connect", this.reconnected);
  }

  // Everything after the last seq held; one loop at a time.
  catchUp() {
    if (this.catching) {
      this.again = true;
      return this.catching;
    }
    this.catching = (async () => {
      do {
        this.again = false;
        await this.pageThrough();
      } while (this.again);
    })().finally(() => {
      this.catching = null;
    });
    return this.catching;
  }

  async pageThrough() {
    for (;;) {
      const answer = await call(this.socket, "consultation:subscribe", {
        consultation_id: this.consultationId,
        after_seq: this.lastSeq,
      });
      if (!answer.ok) return this.onError(answer.error);
      answer.data.messages.forEach((message) => this.add(message));
      this.writable = answer.data.writable;
      this.onWritable(this.writable);
      if (!answer.data.has_more || !answer.data.messages.length) return;
    }
  }

  add(message) {
    if (message.consultation_id !== this.consultationId || this.seqs.has(message.seq)) return;
    this.seqs.add(message.seq);
    let index = this.messages.length;
    while (index > 0 && this.messages[index - 1].seq > message.seq) index -= 1;
    this.messages.splice(index, 0, message);
    this.onMessage(message, index);
  }

  // The ack as call() gives it; on ok, the message is shown like any other.
  async send(body) {
    if (!this.unsent || this.unsent.body !== body) this.unsent = { body, clientId: crypto.randomUUID() };
    const answer = await call(this.socket, "chat:send", {
      consultation_id: this.consultationId,
      client_id: this.unsent.clientId,
      body,
    });
    if (answer.ok) {
      this.unsent = null;
      this.add(answer.data.message);
    }
    return answer;
  }
}
