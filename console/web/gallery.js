// The gallery: a camera's captures, newest first, a page at a time.

import { confirmAction, h, sameOrigin, sizeText, timeText } from "./dom.js";
import { mayCommand, problemOf, send } from "./session.js";

const PAGE_SIZE = 24;
const VIDEO_KINDS = new Set(["record", "trim", "timelapse_video"]);
const KIND_NAMES = { record: "recording", trim: "trimmed clip", timelapse: "timelapse frames", timelapse_video: "timelapse video", sidecar: "settings", picture: "picture" };

// What became of a capture's upload to the S3 store (`files` says it when uploads are on).
function uploadText(upload) {
  if (!upload) return "";
  if (upload.state === "done") return " · uploaded";
  if (upload.state === "failed") return ` · upload failed: ${upload.error || "see the events"}`;
  return ` · upload ${upload.state}`; // queued, uploading
}

export class Gallery {
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
    const facts = `${timeText(file.time)} · ${sizeText(file.size)}${uploadText(file.upload)}`;
    return h("li", { "data-file": name, "data-upload": file.upload ? file.upload.state : null },
      open,
      h("p", { class: "file-name", text: name }),
      h("p", { class: "file-facts", text: facts, title: file.upload ? file.upload.key : null }),
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
