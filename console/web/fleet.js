// The fleet page: a card per camera the person's certificate covers.

import { h } from "./dom.js";
import { state } from "./session.js";

export function runningJobs(camera) {
  return ((camera.state && camera.state.jobs) || []).filter((j) => j.state === "running" || j.state === "queued");
}

export function warnings(camera) {
  return (camera.state && camera.state.warnings) || [];
}

export class FleetPage {
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
