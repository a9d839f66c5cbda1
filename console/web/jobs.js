// The jobs panel: picture, record, timelapse and stop, running jobs with their progress, and
// what finished jobs kept and lost.

import { h } from "./dom.js";
import { mayCommand, problemOf, send, state } from "./session.js";

function jobFraction(job) {
  const p = job.progress || {};
  if (typeof p.taken === "number" && typeof p.of === "number" && p.of > 0) return p.taken / p.of;
  const duration = p.duration_s || (job.params && job.params.duration);
  if (typeof p.elapsed_s === "number" && duration) return Math.min(1, p.elapsed_s / duration);
  return null;
}

export function jobProgressText(job) {
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

export class JobsPanel {
  constructor(base) {
    this.base = base;
    this.ends = new Map(); // job id -> its terminal event
    this.historyArrived();
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

  // The camera's earlier events: how jobs that ended before the page opened ended, in words.
  historyArrived() {
    for (const event of state.events.get(this.base) || []) this.eventArrived(event);
    if (this.running) this.render(state.cameras.get(this.base));
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
