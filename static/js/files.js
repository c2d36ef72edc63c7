// Files: upload with progress, a job card that follows the job live over SSE, the transcript
// in paragraphs, summaries from presets, and the job list with paging and delete.
import {
  ApiError,
  api,
  authHeaders,
  authMode,
  errorFromResponse,
  fetchEvents,
  formatBytes,
  formatDuration,
  reportUnauthorized,
  sentence,
} from "./api.js";

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
      else {
        const err = await errorFromResponse(response);
        reportUnauthorized(err);
        reject(err);
      }
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

/** A job's name for people: its file name, else a dated placeholder (never a UUID). */
export function jobName(job) {
  if (job.filename) return job.filename;
  const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
  return when ? `Recording of ${when}` : "Recording";
}

/** Save text as a file (works with a cookie, a key header or a JWT alike). */
function saveText(text, filename, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function baseName(name) {
  return (name || "transcript").replace(/\.[A-Za-z0-9]{1,5}$/, "") || "transcript";
}

export function mountFiles(root, { stats, banner, config = {} }) {
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
  const limit = Number(config.max_upload_bytes) || 0;
  if (limit) $("upload-limit").textContent = ` (up to ${formatBytes(limit)})`;

  function setProgress(fraction) {
    const value = Math.round(fraction * 100);
    bar.value = value;
    pct.textContent = `${value} %`;
    if (s.progress[s.progress.length - 1] !== value) s.progress.push(value);
  }

  async function handleFile(file) {
    if (!file) return;
    banner.clear();
    s.progress = [];
    // Checked before sending: a file over the limit would be refused after its upload.
    if (limit && file.size > limit) {
      s.refusedBeforeUpload = (s.refusedBeforeUpload || 0) + 1;
      progressBox.hidden = true;
      banner.show(`“${file.name}” is ${formatBytes(file.size)}; files up to ${formatBytes(limit)} can be transcribed.`);
      input.value = "";
      return;
    }
    progressBox.hidden = false;
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
      showJob({ ...job, filename: job.filename || file.name });
      loadList(true);
    } catch (err) {
      // A refused upload leaves no full bar behind.
      setProgress(0);
      progressBox.hidden = true;
      if (err instanceof ApiError && err.status === 413 && limit) {
        banner.show(`“${file.name}” is too large; files up to ${formatBytes(limit)} can be transcribed.`);
      } else banner.show(sentence(err));
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

  function showJob(job) {
    card.hidden = false;
    card.dataset.id = job.id;
    card.dataset.upstream = job.upstream_id || "";
    card.dataset.name = jobName(job);
    const status = job.status || "queued";
    const meta = job.audio_duration ? `Duration ${formatDuration(job.audio_duration)}` : "";
    card.replaceChildren(
      el(
        "div",
        { class: "row spread" },
        el("h2", { id: "job-title" }, jobName(job)),
        el("span", { class: `badge ${status}`, id: "job-status", role: "status" }, status),
      ),
      el("p", { class: "muted small", id: "job-meta" }, meta),
      el("p", { class: "muted small", id: "job-error" }, job.error || ""),
      el(
        "div",
        { class: "tools", id: "job-tools", hidden: "" },
        el("button", { type: "button", id: "job-copy", onclick: () => copyText() }, "Copy text"),
        ...["txt", "srt", "vtt"].map((format) =>
          el(
            "button",
            { type: "button", "data-download": format, onclick: () => download(format) },
            `Download ${format.toUpperCase()}`,
          ),
        ),
      ),
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
    const upstream = encodeURIComponent(card.dataset.upstream);
    try {
      // From the AssemblyAI-compatible surface (cached once complete). With speaker labels
      // the transcript has utterances, one per speaker turn: those are shown, labelled;
      // otherwise its paragraphs.
      const transcript = await api(`/v2/transcript/${upstream}`);
      const utterances = transcript.utterances || [];
      if (utterances.length) {
        box.replaceChildren(
          ...utterances.map((u) =>
            el(
              "p",
              { class: "utterance" },
              el("span", { class: "time" }, fmtTime(u.start)),
              el("span", { class: "speaker" }, `Speaker ${u.speaker}:`),
              u.text,
            ),
          ),
        );
      } else {
        const data = await api(`/v2/transcript/${upstream}/paragraphs`);
        const paragraphs = data.paragraphs || [];
        box.replaceChildren(
          ...paragraphs.map((p) =>
            el("p", { class: "paragraph" }, el("span", { class: "time" }, fmtTime(p.start)), p.text),
          ),
        );
      }
      if (!box.children.length) box.textContent = "The transcript is empty.";
      card.querySelector("#job-tools").hidden = !box.children.length;
      if (transcript.audio_duration) {
        card.querySelector("#job-meta").textContent = `Duration ${formatDuration(transcript.audio_duration)}`;
      }
      s.transcriptShown = true;
      card.querySelector("#job-summaries").hidden = false;
      refreshSummaries(id);
    } catch (err) {
      box.textContent = sentence(err);
    }
  }

  function transcriptText() {
    const lines = [...card.querySelectorAll("#job-text > p")].map((p) =>
      [...p.childNodes]
        .filter((n) => !(n.classList && n.classList.contains("time")))
        .map((n) => n.textContent)
        .join(" ")
        .replace(/\s+/g, " ")
        .trim(),
    );
    return lines.join("\n\n");
  }

  async function copyText() {
    const button = card.querySelector("#job-copy");
    try {
      await navigator.clipboard.writeText(transcriptText());
      button.textContent = "Copied";
      s.copied = (s.copied || 0) + 1;
      setTimeout(() => (button.textContent = "Copy text"), 2000);
    } catch {
      banner.show("The browser did not allow copying. Select the text and copy it instead.");
    }
  }

  async function download(format) {
    const name = baseName(card.dataset.name);
    try {
      if (format === "txt") {
        saveText(`${transcriptText()}\n`, `${name}.txt`, "text/plain");
      } else {
        const text = await api(`/v2/transcript/${encodeURIComponent(card.dataset.upstream)}/${format}`, {
          headers: { Accept: "text/plain, */*" },
        });
        saveText(String(text), `${name}.${format}`, format === "vtt" ? "text/vtt" : "application/x-subrip");
      }
      s.downloads = (s.downloads || 0) + 1;
    } catch (err) {
      banner.show(sentence(err));
    }
  }

  async function summarize(id, preset) {
    const button = card.querySelector(`[data-preset="${preset}"]`);
    // aria-disabled, not disabled: the button keeps keyboard focus while it works.
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    try {
      await api(`/api/transcripts/${id}/summaries`, { method: "POST", body: { preset } });
      await waitForSummaries(id);
    } catch (err) {
      banner.show(sentence(err));
    } finally {
      button.removeAttribute("aria-disabled");
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
    const name = jobName(job);
    const meta = [job.audio_duration ? formatDuration(job.audio_duration) : "", when].filter(Boolean).join(" · ");
    // Each row's buttons have their own accessible names ("Open talk.wav, 12/4/2026, …").
    const label = job.filename ? `${name}, ${when}` : name;
    return el(
      "li",
      { "data-id": job.id },
      el("span", { class: `badge ${job.status}` }, job.status),
      el("span", { class: "name", title: name }, name),
      el("span", { class: "meta" }, meta),
      el(
        "button",
        {
          type: "button",
          "aria-label": `Open ${label}`,
          onclick: () => {
            showJob(job);
            card.querySelector("#job-title").setAttribute("tabindex", "-1");
            card.querySelector("#job-title").focus();
          },
        },
        "Open",
      ),
      el("button", { type: "button", class: "danger", "aria-label": `Delete ${label}`, onclick: () => remove(job) }, "Delete"),
    );
  }

  async function remove(job) {
    if (!confirm("Delete this transcript? Its text is removed here and at AssemblyAI.")) return;
    try {
      await api(`/api/transcripts/${job.id}`, { method: "DELETE" });
      const row = list.querySelector(`[data-id="${job.id}"]`);
      // Focus goes to the next row (or the previous, or Refresh), not to the page's top.
      const next = row?.nextElementSibling || row?.previousElementSibling;
      row?.remove();
      (next?.querySelector("button") || $("jobs-refresh")).focus();
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

  return { loadList, handleFile, halt: stopFollowing };
}
