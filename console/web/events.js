// A camera's events in words, newest first, filterable.

import { h, timeText } from "./dom.js";
import { jobProgressText } from "./jobs.js";
import { state } from "./session.js";

export class EventList {
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
