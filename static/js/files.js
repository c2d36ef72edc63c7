// Files: upload with progress, a job card that follows the job live over SSE, the transcript
// in paragraphs, summaries from presets, and the job list with paging and delete.
import { ApiError, api, authHeaders, authMode, errorFromResponse, fetchEvents, sentence } from "./api.js";

const PAGE_SIZE = 10;
const FINAL = new Set(["completed", "error", "failed", "deleted"]);
const JOB_EVENTS = ["status", "submitting", "queued", "processing", "completed", "error", "failed", "deleted"];
export const SUMMARY_PRESETS = [
  { preset: "bullets", label: "Bullet summary" },
  { preset: "paragraph", label: "Paragraph summary" },
  { preset: "chapters", label: "Chapters" },
  { preset: "action_items", label: "Action items" },
];

/** POST a file with XMLHttpRequest: fetch has no upload progress events in most browsers. */
export function uploadWithProgress(url, file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.append(k, v);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.withCredentials = true;
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.upload.onload = () => onProgress(1);
    xhr.onerror = () => reject(new ApiError("The upload failed: the service could not be reached."));
    xhr.onabort = () => reject(new ApiError("The upload was cancelled."));
    xhr.onload = async () => {
      const response = new Response(xhr.responseText, {
        status: xhr.status,
        headers: { "Content-Type": xhr.getResponseHeader("Content-Type") || "application/json" },
      });
      if (xhr.status >= 200 && xhr.status < 300) resolve(await response.json());
      else reject(await errorFromResponse(response));
    };
    xhr.send(form);
  });
}

function fmtTime(ms) {
  const total = Math.floor((ms || 0) / 1000);
  const m = Math.floor(total / 60);
  const s = String(total % 60).padStart(2, "0");
  return `${m}:${s}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function mountFiles(root, { stats, banner }) {
  const $ = (id) => root.querySelector(`#${id}`);
  const input = $("file-input");
  const drop = $("drop");
  const bar = $("upload-bar");
  const pct = $("upload-pct");
  const progressBox = $("upload-progress");
  const card = $("job");
  const list = $("jobs");
  const more = $("jobs-more");

  const s = (stats.files = { progress: [], statuses: [], summaries: 0, jobId: null });
  let cursor = null;
  let events = null; // EventSource or AbortController of the followed job

  function setProgress(fraction) {
    const value = Math.round(fraction * 100);
    bar.value = value;
    pct.textContent = `${value} %`;
    if (s.progress[s.progress.length - 1] !== value) s.progress.push(value);
  }

  async function handleFile(file) {
    if (!file) return;
    banner.clear();
    progressBox.hidden = false;
    s.progress = [];
    setProgress(0);
    try {
      // Upload-and-submit in one request: the file streams through the service to AssemblyAI.
      // `config` (submit parameters as JSON) must come before `file` in the form.
      const config = {};
      if ($("file-speakers").checked) config.speaker_labels = true;
      const fields = { config: JSON.stringify(config) };
      const job = await uploadWithProgress("/api/transcripts", file, fields, setProgress);
      setProgress(1);
      s.jobId = job.id;
      showJob(job, file.name);
      loadList(true);
    } catch (err) {
      banner.show(sentence(err));
    } finally {
      input.value = "";
    }
  }

  function follow(job) {
    stopFollowing();
    const path = `/api/transcripts/${job.id}/events`;
    const onEvent = (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (event.type === "summary") refreshSummaries(job.id);
      else if (data.status) {
        if (data.upstream_id && card.dataset.id === job.id) card.dataset.upstream = data.upstream_id;
        s.statuses.push(data.status);
        updateStatus(job.id, data.status, data.error);
      }
    };
    if (authMode() === "cookie") {
      // EventSource sends the session cookie and resumes with Last-Event-ID by itself.
      const source = new EventSource(path, { withCredentials: true });
      // Events are named by the job's status (and "summary"); EventSource needs each name.
      // ("error" also fires on connection trouble: those carry no data and are skipped.)
      for (const name of [...JOB_EVENTS, "summary", "message"]) source.addEventListener(name, onEvent);
      events = source;
    } else {
      const abort = new AbortController();
      fetchEvents(path, onEvent, abort.signal).catch(() => {});
      events = abort;
    }
  }

  function stopFollowing() {
    if (events instanceof EventSource) events.close();
    else events?.abort();
    events = null;
  }

  function showJob(job, name) {
    card.hidden = false;
    card.dataset.id = job.id;
    card.dataset.upstream = job.upstream_id || "";
    const status = job.status || "queued";
    card.replaceChildren(
      el(
        "div",
        { class: "row spread" },
        el("h2", {}, name || job.filename || "Transcript"),
        el("span", { class: `badge ${status}`, id: "job-status" }, status),
      ),
      el("p", { class: "muted small", id: "job-error" }, job.error || ""),
      el("div", { id: "job-text" }),
      el(
        "div",
        { class: "summaries", id: "job-summaries", hidden: "" },
        el("h2", {}, "Summaries"),
        el(
          "div",
          { class: "row" },
          ...SUMMARY_PRESETS.map((p) =>
            el("button", { type: "button", "data-preset": p.preset, onclick: () => summarize(job.id, p.preset) }, p.label),
          ),
        ),
        el("div", { id: "summary-list" }),
      ),
    );
    s.statuses = [status];
    if (status === "completed") showTranscript(job.id);
    if (!FINAL.has(status)) follow(job);
  }

  function updateStatus(id, status, error) {
    if (card.dataset.id !== id) return;
    const badge = card.querySelector("#job-status");
    badge.textContent = status;
    badge.className = `badge ${status}`;
    if (error) card.querySelector("#job-error").textContent = error;
    if (status === "completed" && !card.querySelector(".paragraph")) showTranscript(id);
    if (FINAL.has(status)) {
      stopFollowing();
      loadList(true);
    }
  }

  async function showTranscript(id) {
    const box = card.querySelector("#job-text");
    try {
      // Paragraphs come from the AssemblyAI-compatible surface (cached once complete).
      const data = await api(`/v2/transcript/${encodeURIComponent(card.dataset.upstream)}/paragraphs`);
      const paragraphs = data.paragraphs || [];
      box.replaceChildren(
        ...paragraphs.map((p) =>
          el("p", { class: "paragraph" }, el("span", { class: "time" }, fmtTime(p.start)), p.text),
        ),
      );
      if (!paragraphs.length) box.textContent = "The transcript is empty.";
      s.transcriptShown = true;
      card.querySelector("#job-summaries").hidden = false;
      refreshSummaries(id);
    } catch (err) {
      box.textContent = sentence(err);
    }
  }

  async function summarize(id, preset) {
    const button = card.querySelector(`[data-preset="${preset}"]`);
    button.disabled = true;
    try {
      await api(`/api/transcripts/${id}/summaries`, { method: "POST", body: { preset } });
      await waitForSummaries(id);
    } catch (err) {
      banner.show(sentence(err));
    } finally {
      button.disabled = false;
    }
  }

  // Summaries finish in the background; the SSE stream says so, and a short poll covers a
  // browser whose stream was interrupted.
  async function waitForSummaries(id) {
    const deadline = Date.now() + 60000;
    while (Date.now() < deadline && card.dataset.id === id) {
      const pending = await refreshSummaries(id);
      if (!pending) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async function refreshSummaries(id) {
    const data = await api(`/api/transcripts/${id}/summaries`);
    const items = Array.isArray(data) ? data : [];
    const box = card.querySelector("#summary-list");
    if (!box || card.dataset.id !== id) return false;
    box.replaceChildren(
      ...items.map((it) => {
        const label = SUMMARY_PRESETS.find((p) => p.preset === it.preset)?.label || it.preset || "Custom";
        const body = it.status === "completed" ? it.text || "" : it.error || `${it.status}…`;
        return el("div", { class: "summary", "data-status": it.status || "" }, el("strong", {}, `${label}\n`), body);
      }),
    );
    s.summaries = items.filter((it) => it.status === "completed").length;
    return items.some((it) => !["completed", "failed", "error"].includes(it.status));
  }

  async function loadList(reset) {
    if (reset) cursor = null;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await api(`/api/transcripts?${params}`);
      const items = page.items || [];
      if (reset) list.replaceChildren();
      for (const job of items) list.append(jobRow(job));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      if (!items.length && reset) list.append(el("li", { class: "muted" }, "No transcripts yet."));
    } catch (err) {
      // Shown in place: the rest of the view may still work (e.g. with an embedding JWT).
      list.replaceChildren(el("li", { class: "muted" }, sentence(err)));
      more.hidden = true;
    }
  }

  function jobRow(job) {
    const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
    return el(
      "li",
      { "data-id": job.id },
      el("span", { class: `badge ${job.status}` }, job.status),
      el("span", { class: "name" }, job.upstream_id || job.id),
      el("span", { class: "muted small" }, when),
      el("button", { type: "button", onclick: () => showJob(job) }, "Open"),
      el("button", { type: "button", class: "danger", onclick: () => remove(job) }, "Delete"),
    );
  }

  async function remove(job) {
    if (!confirm("Delete this transcript? Its text is removed here and at AssemblyAI.")) return;
    try {
      await api(`/api/transcripts/${job.id}`, { method: "DELETE" });
      list.querySelector(`[data-id="${job.id}"]`)?.remove();
      if (card.dataset.id === job.id) {
        stopFollowing();
        card.hidden = true;
      }
      s.deleted = (s.deleted || 0) + 1;
    } catch (err) {
      banner.show(sentence(err));
    }
  }

  input.addEventListener("change", () => handleFile(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    handleFile(e.dataTransfer.files[0]);
  });
  $("jobs-refresh").addEventListener("click", () => loadList(true));
  more.addEventListener("click", () => loadList(false));

  return { loadList, handleFile };
}
