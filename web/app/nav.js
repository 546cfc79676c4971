// Moving between the app's pages, for main.js and the pages alike: go() to a hash route
// (drawn again when it is the one shown), and what the page on screen must undo when the
// next one is drawn (listeners, timers). main.js draws on "hashchange" and REDRAW.
export const REDRAW = "telemed:redraw";

const cleanups = [];

export function go(hash) {
  if (location.hash === hash) window.dispatchEvent(new Event(REDRAW));
  else location.hash = hash;
}

export function onLeave(undo) {
  cleanups.push(undo);
}

// Called by main.js before it draws the next page.
export function leavePage() {
  cleanups.splice(0).forEach((undo) => undo());
}
