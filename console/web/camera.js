// A camera's page: live video, the controls built from its descriptors, jobs, and the gallery
// and events tabs.

import { confirmAction, h, idFor } from "./dom.js";
import { EventList } from "./events.js";
import { warnings } from "./fleet.js";
import { Gallery } from "./gallery.js";
import { JobsPanel } from "./jobs.js";
import { LivePlayer } from "./player.js";
import { askHistory, mayCommand, problemOf, send, state } from "./session.js";

export class CameraPage {
  // ``reopen``: show the page again from scratch (the camera it waited for has arrived).
  constructor(base, tab, reopen) {
    this.reopen = reopen;
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

  historyArrived(base) {
    if (base !== this.base) return;
    this.eventList?.render();
    this.jobsPanel?.historyArrived();
  }

  opened() {
    if (this.camera) askHistory(this.base);
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
    if (!this.camera) {
      // Opened before the camera was known (the console service had just started, or the
      // camera came online after the link was followed): show it now.
      if (camera && camera.base === this.base) this.reopen();
      return;
    }
    if (removedBase === this.base) {
      this.status.textContent = "this camera is gone from the broker";
      return;
    }
    if (!camera || camera.base !== this.base) return;
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
      const why = d.inactive ? `inactive: ${d.inactive}` : d.read_only ? "read-only: the camera reports it" : "";
      entry.inactive.textContent = why;
      entry.inactive.hidden = !why;
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
