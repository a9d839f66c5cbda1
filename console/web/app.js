// The console: every camera on the broker, built from what the agents publish (availability,
// state, control descriptors, pictures, events), through one WebSocket to the console service.
// Nothing here knows a control by name: a new control or a new camera needs no code.

import { LivePlayer } from "./player.js";

const state = {
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

// -- small DOM helpers -----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const main = () => document.getElementById("main");
const idFor = (prefix, name) => `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
const mayCommand = () => Boolean(state.user && state.user.may_command);

function confirmAction(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function timeText(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function sizeText(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

// Same origin only: the captures of the camera this nginx serves. Another device's captures
// open in a tab of their own (a request to another origin would need its own certificate).
function sameOrigin(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.origin === location.origin ? parsed.pathname + parsed.search : null;
  } catch {
    return null;
  }
}

// -- the connection --------------------------------------------------------------------------

let backoff = 500;

function connect() {
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
    setTimeout(connect, backoff);
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

function send(camera, channel, body) {
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
    state.events = new Map(Object.entries(message.events));
    route();
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
function problemOf(answer) {
  if (answer.refused || answer.unknown) return answer.message;
  const event = answer.event;
  if (!event.ok) return (event.error && event.error.detail) || event.message;
  return null;
}

// -- routing ---------------------------------------------------------------------------------

function route(again = false) {
  const match = location.hash.match(/^#\/camera\/(.+?)(?:\/(gallery|events))?$/);
  const base = match ? decodeURIComponent(match[1]) : null;
  const tab = match ? match[2] || "live" : null;
  if (!again && state.page && state.page.base === base && state.page.tab === tab) return;
  state.page?.close?.();
  if (!state.user) return;
  if (base === null) state.page = new FleetPage();
  else state.page = new CameraPage(base, tab);
  main().replaceChildren(state.page.element);
  state.page.opened?.();
  document.title = state.page.title;
}

// -- the fleet page --------------------------------------------------------------------------

function runningJobs(camera) {
  return ((camera.state && camera.state.jobs) || []).filter((j) => j.state === "running" || j.state === "queued");
}

function warnings(camera) {
  return (camera.state && camera.state.warnings) || [];
}

class FleetPage {
  constructor() {
    this.base = null;
    this.tab = null;
    this.title = "Cameras";
    this.grid = h("ul", { class: "grid", "aria-label": "Cameras" });
    this.element = h("section", { "aria-labelledby": "fleet-title" },
      h("h1", { id: "fleet-title", text: "Cameras" }), this.grid);
    this.render();
  }

  render() {
    const cameras = [...state.cameras.values()].sort((a, b) => a.base.localeCompare(b.base));
    if (!cameras.length) {
      this.grid.replaceChildren(h("li", { class: "empty", text: "No camera you may see is on the broker." }));
      return;
    }
    this.grid.replaceChildren(...cameras.map((camera) => this.card(camera)));
  }

  card(camera) {
    const stream = (camera.state && camera.state.stream) || {};
    const jobs = runningJobs(camera);
    const warn = warnings(camera);
    const picture = camera.picture
      ? h("img", { src: `/console/picture?camera=${encodeURIComponent(camera.base)}&v=${camera.picture.version}`, alt: `latest picture of ${camera.id}`, loading: "lazy" })
      : h("div", { class: "nopicture", text: "no picture yet" });
    return h("li", { class: `card ${camera.online ? "online" : "offline"}`, "data-camera": camera.base },
      h("a", { href: `#/camera/${encodeURIComponent(camera.base)}`, class: "cardlink" },
        picture,
        h("h2", {}, camera.id),
      ),
      h("p", { class: "facts" },
        h("span", { class: `badge ${camera.online ? "ok" : "bad"}`, text: camera.online ? "online" : "offline" }),
        " ",
        h("span", { text: `stream ${stream.state || "unknown"}` }),
        jobs.length ? h("span", { text: ` · ${jobs.map((j) => j.kind).join(", ")} running` }) : null,
      ),
      warn.length ? h("p", { class: "warning", role: "note", text: warn.join("; ") }) : null,
    );
  }

  cameraChanged() {
    this.render();
  }
}

// -- the camera page -------------------------------------------------------------------------

class CameraPage {
  constructor(base, tab) {
    this.base = base;
    this.tab = tab;
    this.camera = state.cameras.get(base);
    this.title = this.camera ? `${this.camera.id} · Cameras` : "Cameras";
    this.player = null;
    this.controls = new Map(); // name -> {descriptor, input(s), value element, problem}
    this.controlsShape = "";
    if (!this.camera) {
      this.element = h("section", {}, h("h1", { text: "No such camera" }),
        h("p", { text: "It is not on the broker, or your certificate does not cover it." }),
        h("p", {}, h("a", { href: "#/", text: "All cameras" })));
      return;
    }
    const tabs = [["live", "Live"], ["gallery", "Gallery"], ["events", "Events"]];
    const link = (name) => `#/camera/${encodeURIComponent(base)}${name === "live" ? "" : `/${name}`}`;
    this.status = h("p", { class: "camera-status", "aria-live": "polite" });
    this.element = h("section", { class: "camera", "aria-labelledby": "camera-title" },
      h("div", { class: "camera-head" },
        h("h1", { id: "camera-title", text: this.camera.id }),
        this.status,
      ),
      h("nav", { class: "tabs", "aria-label": "Camera pages" },
        tabs.map(([name, label]) => h("a", { href: link(name), "aria-current": name === tab ? "page" : null, text: label }))),
      this.body(),
    );
    this.showStatus();
  }

  body() {
    if (this.tab === "gallery") {
      this.gallery = new Gallery(this.base);
      return this.gallery.element;
    }
    if (this.tab === "events") {
      this.eventList = new EventList(this.base);
      return this.eventList.element;
    }
    this.video = h("video", { muted: true, autoplay: true, playsinline: true, "aria-label": `live video of ${this.camera.id}` });
    this.video.muted = true;
    this.videoState = h("p", { class: "video-state", "aria-live": "polite", text: "starting video…" });
    this.controlsPanel = h("div", { class: "controls" });
    this.jobsPanel = new JobsPanel(this.base);
    return h("div", { class: "live" },
      h("div", { class: "video" }, this.video, this.videoState),
      this.jobsPanel.element,
      h("section", { class: "panel controls-panel", "aria-labelledby": "controls-title" },
        h("h2", { id: "controls-title", text: "Controls" }),
        mayCommand() ? null : h("p", { class: "hint", text: "Read-only: your certificate may watch this camera, not change it." }),
        this.controlsPanel),
    );
  }

  opened() {
    if (this.video) {
      this.renderControls();
      this.startVideo();
    }
    this.gallery?.load();
  }

  startVideo() {
    const path = this.camera && this.camera.stream_path;
    if (!path) {
      this.videoState.textContent = "this camera publishes no stream";
      return;
    }
    this.player?.close();
    this.player = new LivePlayer(this.video, path, (text) => { this.videoState.textContent = text; });
    this.player.start();
  }

  close() {
    this.player?.close();
  }

  showStatus() {
    const camera = this.camera;
    if (!camera) return;
    const stream = (camera.state && camera.state.stream) || {};
    const parts = [camera.online ? "online" : "offline", `stream ${stream.state || "unknown"}`, ...warnings(camera)];
    this.status.textContent = parts.join(" · ");
    this.element.classList.toggle("is-offline", !camera.online);
  }

  cameraChanged(camera, removedBase) {
    if (!this.camera && camera && camera.base === this.base) {
      // Opened before the camera was known (the console service had just started, or the
      // camera came online after the link was followed): show it now.
      route(true);
      return;
    }
    if (removedBase === this.base || (camera && camera.base !== this.base)) {
      if (removedBase === this.base) this.status.textContent = "this camera is gone from the broker";
      return;
    }
    const before = this.camera;
    this.camera = camera;
    this.showStatus();
    if (this.video) {
      this.renderControls();
      this.jobsPanel.render(camera);
      if (before && before.stream_path !== camera.stream_path) this.startVideo();
    }
  }

  eventArrived(base, event) {
    if (base !== this.base) return;
    this.eventList?.add(event);
    this.jobsPanel?.eventArrived(event);
    if (event.event === "job.progress") this.jobsPanel?.render(this.camera);
    if (this.gallery && ["job.succeeded", "file.deleted"].includes(event.event)) this.gallery.load();
  }

  // Controls, from the descriptors; values from the camera's state, never from what was sent.
  renderControls() {
    const descriptors = this.camera.controls || [];
    const shape = JSON.stringify(descriptors.map((d) => [d.name, d.type, d.min, d.max, d.step, d.menu, d.read_only, d.restarts_stream]));
    if (shape !== this.controlsShape) {
      this.controlsShape = shape;
      this.controls.clear();
      this.controlsPanel.replaceChildren(...descriptors.map((d) => this.control(d)));
    }
    const values = (this.camera.state && this.camera.state.controls) || {};
    for (const d of descriptors) {
      const entry = this.controls.get(d.name);
      entry.descriptor = d;
      const value = d.name in values ? values[d.name] : d.value;
      if (!entry.editing) entry.show(value);
      const disabled = !mayCommand() || d.read_only || Boolean(d.inactive) || !this.camera.online;
      for (const input of entry.inputs) input.disabled = disabled;
      entry.inactive.textContent = d.inactive ? `inactive: ${d.inactive}` : "";
      entry.inactive.hidden = !d.inactive;
    }
  }

  control(d) {
    const id = idFor("control", d.name);
    const entry = { descriptor: d, inputs: [], editing: false };
    entry.problem = h("p", { class: "problem", id: `${id}-problem`, role: "alert" });
    entry.inactive = h("p", { class: "inactive", id: `${id}-inactive`, hidden: true });
    const valueText = h("output", { for: id, class: "value" });
    const unit = d.unit ? ` ${d.unit}` : "";
    const described = `${id}-problem ${id}-inactive${d.restarts_stream ? ` ${id}-restart` : ""}`;
    let field;
    if (d.type === "bool") {
      const input = h("input", { type: "checkbox", role: "switch", id, "aria-describedby": described });
      input.addEventListener("change", () => this.change(entry, input.checked));
      entry.inputs = [input];
      entry.show = (v) => { input.checked = Boolean(v); input.setAttribute("aria-checked", String(Boolean(v))); valueText.textContent = v ? "on" : "off"; };
      field = h("div", { class: "switch" }, input, h("label", { for: id, text: d.name }), valueText);
    } else if (d.type === "menu") {
      const input = h("select", { id, "aria-describedby": described },
        (d.menu || []).map((o) => h("option", { value: JSON.stringify(o.value), text: o.label })));
      input.addEventListener("change", () => this.change(entry, JSON.parse(input.value)));
      entry.inputs = [input];
      entry.show = (v) => { input.value = JSON.stringify(v); };
      field = h("div", { class: "menu" }, h("label", { for: id, text: d.name }), input);
    } else if (d.type === "pair") {
      const inputs = [0, 1].map((i) => h("input", { type: "number", id: i ? `${id}-2` : id, min: d.min, max: d.max, step: d.step || "any", "aria-label": `${d.name} ${i ? "second" : "first"}`, "aria-describedby": described }));
      const commit = () => this.change(entry, inputs.map((i) => Number(i.value)));
      inputs.forEach((input) => input.addEventListener("change", commit));
      entry.inputs = inputs;
      entry.show = (v) => { if (Array.isArray(v)) inputs.forEach((input, i) => { input.value = v[i]; }); };
      field = h("fieldset", { class: "pair" }, h("legend", { text: d.name }), inputs);
    } else {
      const numeric = d.min !== null && d.max !== null;
      const input = h("input", {
        type: numeric ? "range" : "number", id, min: d.min, max: d.max,
        step: d.step || (d.type === "int" ? 1 : "any"), "aria-describedby": described,
      });
      const parse = (raw) => (d.type === "int" ? parseInt(raw, 10) : parseFloat(raw));
      input.addEventListener("input", () => { entry.editing = true; valueText.textContent = `${input.value}${unit}`; });
      input.addEventListener("change", () => this.change(entry, parse(input.value)));
      entry.inputs = [input];
      entry.show = (v) => { input.value = v; valueText.textContent = `${v}${unit}`; input.setAttribute("aria-valuetext", `${v}${unit}`); };
      field = h("div", { class: "number" },
        h("label", { for: id, text: d.name }), valueText,
        input,
        numeric ? h("span", { class: "range", "aria-hidden": "true", text: `${d.min} – ${d.max}${unit}` }) : null);
    }
    entry.element = h("div", { class: `control${d.restarts_stream ? " restarts" : ""}`, "data-control": d.name, title: d.description || null },
      field,
      d.restarts_stream ? h("p", { class: "restart-note", id: `${id}-restart`, text: "restarts the stream" }) : null,
      entry.inactive, entry.problem);
    this.controls.set(d.name, entry);
    return entry.element;
  }

  async change(entry, value) {
    const d = entry.descriptor;
    entry.problem.textContent = "";
    entry.editing = true;
    if (d.restarts_stream) {
      const downtime = state.lastDowntime ? `~${state.lastDowntime.toFixed(1)} s` : "about half a second";
      const ok = await confirmAction(`Changing ${d.name} restarts the stream (${downtime} without video). Change it?`, `Change ${d.name}`);
      if (!ok) {
        entry.editing = false;
        this.renderControls();
        return;
      }
    }
    entry.element.classList.add("busy");
    const answer = await send(this.base, "settings", { set: { [d.name]: value } });
    entry.element.classList.remove("busy");
    entry.editing = false;
    const problem = problemOf(answer);
    entry.problem.textContent = problem || "";
    this.renderControls(); // the camera's value, whatever was sent
  }
}

// -- jobs ------------------------------------------------------------------------------------

function jobFraction(job) {
  const p = job.progress || {};
  if (typeof p.taken === "number" && typeof p.of === "number" && p.of > 0) return p.taken / p.of;
  const duration = p.duration_s || (job.params && job.params.duration);
  if (typeof p.elapsed_s === "number" && duration) return Math.min(1, p.elapsed_s / duration);
  return null;
}

function jobProgressText(job) {
  const p = job.progress || {};
  if (p.assembling !== undefined) return "assembling the video";
  if (typeof p.taken === "number") return `${p.taken}${p.of ? ` of ${p.of}` : ""} frames${p.missed ? `, ${p.missed} missed` : ""}`;
  if (typeof p.elapsed_s === "number") return `${p.elapsed_s.toFixed(0)}${p.duration_s ? ` of ${p.duration_s}` : ""} s`;
  return job.state;
}

// What a finished job kept and lost, in words.
function jobOutcome(job, event) {
  if (event && event.message) return event.message.replace(/^(SUCCESS|ERROR): /, "");
  if (job.error) return job.error.detail;
  const r = job.result || {};
  if (typeof r.duration_s === "number") {
    const lost = (r.gaps || []).reduce((sum, g) => sum + (g.length_s || 0), 0);
    return `kept ${r.duration_s.toFixed(1)} of ${(r.requested_s || r.duration_s).toFixed(1)} s${lost ? `, lost ${lost.toFixed(1)} s` : ""}`;
  }
  return r.path || job.state;
}

class JobsPanel {
  constructor(base) {
    this.base = base;
    this.ends = new Map(); // job id -> its terminal event
    for (const event of state.events.get(base) || []) this.eventArrived(event);
    this.message = h("p", { class: "job-message", role: "status", "aria-live": "polite" });
    this.running = h("ul", { class: "jobs", "aria-label": "Running jobs" });
    this.finished = h("ul", { class: "jobs done", "aria-label": "Finished jobs" });
    const number = (id, label, value, min, max, step) => h("label", { for: id, class: "inline" }, label,
      h("input", { type: "number", id, value, min, max, step, inputmode: "decimal" }));
    const commands = mayCommand() ? h("div", { class: "job-buttons" },
      h("button", { type: "button", onclick: () => this.run({ action: "picture" }) }, "Picture"),
      h("fieldset", {}, h("legend", { text: "Recording" }),
        number("record-length", "length (s)", 10, 1, 3000, 1), number("record-preroll", "pre-roll (s)", 0, 0, 30, 1),
        h("button", { type: "button", onclick: () => this.run({ action: "record", duration: this.value("record-length"), preroll: this.value("record-preroll") }) }, "Record")),
      h("fieldset", {}, h("legend", { text: "Timelapse" }),
        number("timelapse-interval", "every (s)", 5, 1, 86400, 1), number("timelapse-count", "frames", 10, 1, 999999, 1),
        h("button", { type: "button", onclick: () => this.run({ action: "timelapse", interval: this.value("timelapse-interval"), count: this.value("timelapse-count") }) }, "Timelapse")),
      h("button", { type: "button", class: "stop", onclick: () => this.run({ action: "stop" }) }, "Stop"),
    ) : null;
    this.element = h("section", { class: "panel", "aria-labelledby": "jobs-title" },
      h("h2", { id: "jobs-title", text: "Jobs" }), commands, this.message, this.running, this.finished);
    this.render(state.cameras.get(base));
  }

  value(id) {
    const raw = document.getElementById(id).value;
    return raw === "" ? undefined : Number(raw);
  }

  async run(body) {
    this.message.textContent = `${body.action}…`;
    const clean = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
    const answer = await send(this.base, "action", clean);
    const problem = problemOf(answer);
    this.message.textContent = problem ? `${body.action}: ${problem}` : answer.event.message.replace(/^SUCCESS: /, "");
    this.message.classList.toggle("problem", Boolean(problem));
  }

  eventArrived(event) {
    if (event.job && ["job.succeeded", "job.failed", "job.cancelled"].includes(event.event)) {
      this.ends.set(event.job, event);
      if (this.ends.size > 50) this.ends.delete(this.ends.keys().next().value);
    }
  }

  render(camera) {
    if (!camera) return;
    const jobs = (camera.state && camera.state.jobs) || [];
    const running = jobs.filter((j) => j.state === "running" || j.state === "queued");
    const finished = jobs.filter((j) => !running.includes(j)).reverse().slice(0, 5);
    this.running.replaceChildren(...running.map((job) => {
      const fraction = jobFraction(job);
      const label = `${job.kind} ${jobProgressText(job)}`;
      return h("li", { "data-job": job.id },
        h("span", { text: `${job.kind} · ${jobProgressText(job)}` }),
        h("progress", fraction === null ? { "aria-label": label } : { value: fraction, max: 1, "aria-label": label }));
    }));
    this.finished.replaceChildren(...finished.map((job) => {
      const ok = job.state === "succeeded";
      return h("li", { "data-job": job.id, class: ok ? "ok" : "bad" },
        h("strong", { text: `${job.kind} ${job.state}` }), ": ", jobOutcome(job, this.ends.get(job.id)));
    }));
  }
}

// -- the gallery -----------------------------------------------------------------------------

const PAGE_SIZE = 24;
const VIDEO_KINDS = new Set(["record", "trim", "timelapse_video"]);
const KIND_NAMES = { record: "recording", trim: "trimmed clip", timelapse: "timelapse frames", timelapse_video: "timelapse video", sidecar: "settings", picture: "picture" };

class Gallery {
  constructor(base) {
    this.base = base;
    this.pages = [null]; // `before` of each page seen, for going back
    this.index = 0;
    this.list = h("ul", { class: "gallery", "aria-label": "Captures" });
    this.message = h("p", { role: "status", "aria-live": "polite" });
    this.prev = h("button", { type: "button", onclick: () => this.turn(-1) }, "Newer");
    this.next = h("button", { type: "button", onclick: () => this.turn(1) }, "Older");
    this.element = h("section", { class: "panel", "aria-labelledby": "gallery-title" },
      h("h2", { id: "gallery-title", text: "Captures" }), this.message, this.list,
      h("div", { class: "pager" }, this.prev, this.next));
  }

  turn(step) {
    this.index = Math.max(0, this.index + step);
    this.load();
  }

  async load() {
    const body = { action: "files", limit: PAGE_SIZE };
    if (this.pages[this.index]) body.before = this.pages[this.index];
    const answer = await send(this.base, "action", body);
    const problem = problemOf(answer);
    if (problem) {
      this.message.textContent = problem;
      return;
    }
    const data = answer.event.data;
    this.pages[this.index + 1] = data.next_before;
    this.prev.disabled = this.index === 0;
    this.next.disabled = !data.next_before;
    this.message.textContent = `${data.total} captures`;
    this.list.replaceChildren(...data.files.map((file) => this.item(file)));
  }

  item(file) {
    const local = sameOrigin(file.url);
    const name = file.name;
    let preview;
    if (file.kind === "picture" && local) preview = h("img", { src: local, alt: name, loading: "lazy" });
    else if (VIDEO_KINDS.has(file.kind) && local) preview = h("video", { src: `${local}#t=0.5`, preload: "metadata", muted: true, "aria-hidden": "true", tabindex: "-1" });
    else preview = h("div", { class: `kind ${file.kind}`, "aria-hidden": "true", text: KIND_NAMES[file.kind] || file.kind });
    const open = h("button", { type: "button", class: "open", "aria-label": `open ${name}`, onclick: () => this.open(file, local) }, preview);
    const actions = h("div", { class: "file-actions" },
      local && !name.endsWith("/") ? h("a", { href: local, download: name.split("/").pop(), "aria-label": `download ${name}` }, "Download") : null,
      mayCommand() ? h("button", { type: "button", class: "danger", "aria-label": `delete ${name}`, onclick: () => this.remove(file) }, "Delete") : null);
    return h("li", { "data-file": name },
      open,
      h("p", { class: "file-name", text: name }),
      h("p", { class: "file-facts", text: `${timeText(file.time)} · ${sizeText(file.size)}` }),
      actions);
  }

  open(file, local) {
    const body = document.getElementById("viewer-body");
    const dialog = document.getElementById("viewer");
    if (!local) {
      body.replaceChildren(h("p", {}, "This capture is on another device: ", h("a", { href: file.url, target: "_blank", rel: "noopener", text: "open it there" })));
    } else if (file.kind === "picture") {
      body.replaceChildren(h("img", { src: local, alt: file.name, class: "full" }));
    } else if (file.kind === "timelapse") {
      body.replaceChildren(h("p", { text: `${file.name}: ${file.frames || 0} frames (${sizeText(file.size)})` }));
    } else {
      body.replaceChildren(h("video", { src: local, controls: true, autoplay: true, playsinline: true, class: "full", "aria-label": `playing ${file.name}` }));
    }
    dialog.setAttribute("aria-label", file.name);
    dialog.showModal();
    dialog.addEventListener("close", () => body.replaceChildren(), { once: true });
  }

  async remove(file) {
    if (!(await confirmAction(`Delete ${file.name}? It cannot be brought back.`, "Delete"))) return;
    const answer = await send(this.base, "action", { action: "delete", file: file.name });
    const problem = problemOf(answer);
    this.message.textContent = problem ? `not deleted: ${problem}` : `deleted ${file.name}`;
    if (!problem) this.load();
  }
}

// -- events ----------------------------------------------------------------------------------

class EventList {
  constructor(base) {
    this.base = base;
    this.filter = h("input", { type: "search", id: "event-filter", placeholder: "job, stream, error…" });
    this.errorsOnly = h("input", { type: "checkbox", id: "event-errors" });
    this.list = h("ol", { class: "events", "aria-label": "Events", reversed: true });
    this.filter.addEventListener("input", () => this.render());
    this.errorsOnly.addEventListener("change", () => this.render());
    this.element = h("section", { class: "panel", "aria-labelledby": "events-title" },
      h("h2", { id: "events-title", text: "Events" }),
      h("div", { class: "filters" },
        h("label", { for: "event-filter", text: "Filter" }), this.filter,
        h("span", { class: "switch" }, this.errorsOnly, h("label", { for: "event-errors", text: "errors only" }))),
      this.list);
    this.render();
  }

  matches(event) {
    if (this.errorsOnly.checked && event.ok !== false) return false;
    const needle = this.filter.value.trim().toLowerCase();
    return !needle || `${event.event} ${event.message} ${event.job || ""}`.toLowerCase().includes(needle);
  }

  line(event) {
    return h("li", { class: event.ok === false ? "bad" : "" },
      h("time", { datetime: event.ts, text: timeText(event.ts) }), " ",
      h("strong", { text: event.event }), " ",
      event.message || (event.data && event.data.progress ? `${event.data.kind || "job"} ${jobProgressText(event.data)}` : ""),
      event.by ? h("span", { class: "by", text: ` (${event.by})` }) : null);
  }

  render() {
    const events = (state.events.get(this.base) || []).filter((e) => this.matches(e)).reverse();
    this.list.replaceChildren(...events.map((e) => this.line(e)));
  }

  add(event) {
    if (this.matches(event)) this.list.prepend(this.line(event));
  }
}

// -- start -----------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
connect();
