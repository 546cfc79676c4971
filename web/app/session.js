// Who is signed in, and their live link: one Socket.IO connection per signed-in tab
// (lib/socket.js), which the pages' live parts (the chat) use. signedIn() is the one way
// to change the user; main.js draws what follows (the bell, the menu) in onSignedIn.
import { connect } from "../lib/socket.js";
import { chosenLanguage, load } from "./i18n.js";

export const session = { user: null, socket: null };

const listeners = [];

export function onSignedIn(listener) {
  listeners.push(listener);
}

export async function signedIn(user) {
  session.user = user;
  if (session.socket) {
    session.socket.disconnect();
    session.socket = null;
  }
  await load(chosenLanguage(user), user && user.time_zone);
  if (user && !user.must_change_password) session.socket = connect();
  for (const listener of listeners) await listener(user);
}
