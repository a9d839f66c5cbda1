// The one WebSocket to the console service: who the person is, the cameras they may see, their
// events, and the commands the pages send with the answers that come back.

export const state = {
  user: null,
  socket: null,
  socketUp: false,
  brokerUp: false,
  cameras: new Map(), // base -> view
  events: new Map(), // base -> [event], newest last
  pending: new Map(), // ref -> {resolve}
  nextRef: 1,
  page: null, // the page object being shown
  lastDowntime: null, // seconds a restart-class change took last time
};
const EVENTS_KEPT = 200;

export const mayCommand = () => Boolean(state.user && state.user.may_command);

let backoff = 500;

let onSnapshot = () => {};

// ``snapshot``: called when the console has sent who the person is and every camera.
export function connect(snapshot) {
  onSnapshot = snapshot;
  const socket = new WebSocket(`wss://${location.host}/console/ws`);
  state.socket = socket;
  socket.addEventListener("open", () => {
    backoff = 500;
    state.socketUp = true;
    showBanner();
  });
  socket.addEventListener("message", (message) => receive(JSON.parse(message.data)));
  socket.addEventListener("close", () => {
    state.socketUp = false;
    state.socket = null;
    for (const [ref, waiter] of state.pending) {
      waiter.resolve({ unknown: true, message: "the console connection closed before an answer came; the command may still have run" });
      state.pending.delete(ref);
    }
    showBanner();
    setTimeout(() => connect(snapshot), backoff);
    backoff = Math.min(backoff * 2, 10000);
  });
}

function showBanner() {
  const banner = document.getElementById("banner");
  let text = "";
  if (!state.socketUp) text = "Reconnecting to the console…";
  else if (!state.brokerUp) text = "Reconnecting: the console has lost the broker; values shown may be old.";
  banner.textContent = text;
  banner.hidden = !text;
  document.body.classList.toggle("offline", Boolean(text));
}

// A camera's recent events, for its page (the snapshot has none).
export function askHistory(camera) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: "history", camera }));
  }
}

export function send(camera, channel, body) {
  const ref = String(state.nextRef++);
  return new Promise((resolve) => {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
      resolve({ refused: true, message: "not connected to the console; try again when it is back" });
      return;
    }
    state.pending.set(ref, { resolve });
    state.socket.send(JSON.stringify({ type: "command", ref, camera, channel, body }));
  });
}

const handlers = {
  hello(message) {
    state.user = message.user;
    state.brokerUp = message.broker;
    const who = document.getElementById("who");
    who.textContent = `${message.user.name} · ${message.user.role}`;
    showBanner();
  },
  cameras(message) {
    state.cameras = new Map(message.cameras.map((c) => [c.base, c]));
    state.events = new Map();
    onSnapshot();
  },
  camera(message) {
    state.cameras.set(message.camera.base, message.camera);
    state.page?.cameraChanged?.(message.camera);
  },
  removed(message) {
    state.cameras.delete(message.base);
    state.page?.cameraChanged?.(null, message.base);
  },
  event(message) {
    const list = state.events.get(message.base) || [];
    list.push(message.event);
    if (list.length > EVENTS_KEPT) list.splice(0, list.length - EVENTS_KEPT);
    state.events.set(message.base, list);
    const data = message.event.data || {};
    if (message.event.event === "settings.applied" && data.restarted) state.lastDowntime = data.downtime_s;
    if (message.event.event === "job.progress") foldProgress(message.base, message.event);
    state.page?.eventArrived?.(message.base, message.event);
  },
  history(message) {
    // What came live since the request is newer than the history: keep both, in order.
    const live = state.events.get(message.base) || [];
    const seen = new Set(live.map((e) => `${e.ts} ${e.event} ${e.job}`));
    const older = message.events.filter((e) => !seen.has(`${e.ts} ${e.event} ${e.job}`));
    state.events.set(message.base, [...older, ...live].slice(-EVENTS_KEPT));
    state.page?.historyArrived?.(message.base);
  },
  broker(message) {
    state.brokerUp = message.connected;
    showBanner();
  },
  answer(message) {
    const waiter = state.pending.get(message.ref);
    if (!waiter) return;
    state.pending.delete(message.ref);
    waiter.resolve(message);
  },
};

// The agent republishes its state at a job's transitions, not at every progress report: the
// progress goes into the job's entry here, as the console service does for pages that open.
function foldProgress(base, event) {
  const camera = state.cameras.get(base);
  const jobs = (camera && camera.state && camera.state.jobs) || [];
  const job = jobs.find((j) => j.id === event.job);
  if (job && event.data && event.data.progress) job.progress = event.data.progress;
}

function receive(message) {
  handlers[message.type]?.(message);
}

// What an answer says, in words; null when it succeeded.
export function problemOf(answer) {
  if (answer.refused || answer.unknown) return answer.message;
  const event = answer.event;
  if (!event.ok) return (event.error && event.error.detail) || event.message;
  return null;
}
