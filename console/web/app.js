// The console: every camera on the broker, built from what the agents publish (availability,
// state, control descriptors, pictures, events), through one WebSocket to the console service.
// Nothing here knows a control by name: a new control or a new camera needs no code.

import { CameraPage } from "./camera.js";
import { FleetPage } from "./fleet.js";
import { askHistory, connect, state } from "./session.js";

const main = () => document.getElementById("main");

function route(again = false) {
  const match = location.hash.match(/^#\/camera\/(.+?)(?:\/(gallery|events))?$/);
  const base = match ? decodeURIComponent(match[1]) : null;
  const tab = match ? match[2] || "live" : null;
  if (!again && state.page && state.page.base === base && state.page.tab === tab) return;
  state.page?.close?.();
  if (!state.user) return;
  if (base === null) state.page = new FleetPage();
  else state.page = new CameraPage(base, tab, () => route(true));
  main().replaceChildren(state.page.element);
  state.page.opened?.();
  document.title = state.page.title;
}

// A fresh snapshot (after a reconnect): the page shown stays, video and all, and takes it in.
function snapshot() {
  route();
  const page = state.page;
  if (!page || !page.cameraChanged) return;
  if (page.base === null) page.cameraChanged();
  else if (state.cameras.has(page.base)) {
    page.cameraChanged(state.cameras.get(page.base));
    askHistory(page.base); // the events the page had went with the old connection
  } else page.cameraChanged(null, page.base);
}

window.addEventListener("hashchange", () => route());
connect(snapshot);
