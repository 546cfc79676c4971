// The chat: beside the video on a wide screen, a panel over it on a phone (opened from
// the bar, with a badge counting what came while it was closed). lib/chat.js's messages
// drawn in #chat-log (as text), the form that sends, and a chat the server no longer
// takes messages in shown read-only.
import { Chat } from "../lib/chat.js";
import { $ } from "./view.js";

export function createChatPanel({ state, view, socket, consultationId, isDoctor }) {
  const { TEXT } = view;
  const log = $("chat-log");

  const phone = window.matchMedia("(max-width: 899px)");
  const isOpen = () => !phone.matches || $("room").classList.contains("chat-open");

  function showUnread() {
    const badge = $("unread");
    badge.textContent = String(state.unread);
    badge.hidden = state.unread === 0;
    const label = state.unread ? `${TEXT.chat}: ${view.plural("unread", state.unread)}` : TEXT.chat;
    $("chat-toggle").setAttribute("aria-label", label);
    $("chat-toggle").title = label;
  }

  function toggle(open) {
    $("room").classList.toggle("chat-open", open);
    $("chat-toggle").setAttribute("aria-expanded", String(open));
    if (open) {
      state.unread = 0;
      showUnread();
      $("chat-input").focus();
    }
  }

  $("chat-toggle").addEventListener("click", () => toggle(!$("room").classList.contains("chat-open")));

  function draw(message, index) {
    const mine = message.sender_id === state.userId;
    if (!mine && !isOpen() && index >= log.children.length) {
      state.unread += 1;
      showUnread();
    }
    const item = document.createElement("li");
    item.className = mine ? "mine" : "theirs";
    item.dataset.seq = message.seq;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = mine ? TEXT.you : view.roleName(isDoctor ? "patient" : "doctor");
    const when = document.createElement("time");
    when.dateTime = message.created_at;
    when.textContent = view.time(message.created_at);
    const body = document.createElement("p");
    body.textContent = message.body;
    item.append(who, " ", when, body);
    log.insertBefore(item, log.children[index] || null);
    item.scrollIntoView({ block: "nearest" });
    state.chat = chat.messages.length;
  }

  const chat = new Chat({
    socket,
    consultationId,
    onMessage: draw,
    onWritable(writable) {
      $("chat-input").disabled = $("chat-send").disabled = !writable;
      $("chat-error").textContent = writable ? "" : TEXT.chatClosed;
    },
    onError(error) {
      $("chat-error").textContent = view.explain(error);
    },
  });

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("chat-input");
    const body = input.value.trim();
    if (!body) return;
    const sent = await chat.send(body);
    if (!sent.ok) {
      $("chat-error").textContent = view.explain(sent.error);
      return;
    }
    $("chat-error").textContent = "";
    input.value = "";
  });

  return chat;
}
