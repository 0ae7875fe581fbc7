// The page of `mmgen serve`: plain JS, talks to the JSON endpoints of mmgen/web/server.py.
"use strict";

const $ = (id) => document.getElementById(id);
const VOCAB_SHOWN = 600;  // a pruned model knows a few hundred words; a full BPE vocabulary is cut here
let modelKind = null;
let checkTimer = null;
let checkSeq = 0;
let lastSeed = null;

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new Error("the server does not answer (was `mmgen serve` stopped?)");
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error((data && data.error) || `${resp.status} ${resp.statusText}`);
  return data;
}

function showMessage(text) {
  const el = $("message");
  el.textContent = text || "";
  el.hidden = !text;
  if (text && $("hint").textContent === text) $("hint").textContent = "";  // said once is enough
}

function showWarnings(list) {
  const el = $("warnings");
  el.replaceChildren();
  if (list && list.length) {
    const ul = document.createElement("ul");
    for (const w of list) { const li = document.createElement("li"); li.textContent = w; ul.append(li); }
    el.append(ul);
  }
  el.hidden = !(list && list.length);
}

function setProgress(text, done, total) {
  const bar = $("progress");
  $("progress-text").textContent = text || "";
  bar.hidden = text === null;
  if (total > 0) { bar.max = total; bar.value = done; } else { bar.removeAttribute("value"); }
}

async function loadModels() {
  const data = await api("/api/models");
  const select = $("model");
  for (const m of data.models) {
    const opt = document.createElement("option");
    opt.value = m.id; opt.textContent = m.label;
    select.append(opt);
  }
  const d = data.defaults;
  $("num-images").value = d.num_images; $("guidance").value = d.guidance;
  $("candidates").value = d.candidates; $("rerank").checked = d.rerank; $("steps").value = d.steps;
  await loadModel();
}

async function loadModel() {
  const id = $("model").value;
  const status = $("model-status");
  status.className = "note";
  status.textContent = "loading the model…";
  $("vocab").replaceChildren(); $("vocab-count").textContent = "";
  modelKind = null;
  try {
    const info = await api(`/api/model?id=${encodeURIComponent(id)}`);
    if ($("model").value !== id) return;  // the user picked another model meanwhile
    modelKind = info.kind;
    status.textContent = info.kind === "ddpm" ? "diffusion model (DDPM): sampling steps apply"
                                              : "autoregressive model (DALL-E style): image tokens, then decoded";
    const steps = $("steps");
    steps.disabled = info.kind !== "ddpm";
    $("steps-field").classList.toggle("disabled", steps.disabled);
    steps.title = steps.disabled ? "only diffusion models take sampling steps" : "";
    showVocabulary(info.vocabulary);
    scheduleCheck();
  } catch (e) {
    status.className = "note bad";
    status.textContent = e.message;
  }
}

function showVocabulary(words) {
  const box = $("vocab");
  $("vocab-count").textContent = `(${words.length})`;
  for (const w of words.slice(0, VOCAB_SHOWN)) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = w;
    b.addEventListener("click", () => {
      const p = $("prompt");
      p.value = p.value && !/\s$/.test(p.value) ? `${p.value} ${w}` : p.value + w;
      p.focus();
      scheduleCheck();
    });
    box.append(b);
  }
  if (words.length > VOCAB_SHOWN) {
    const more = document.createElement("span");
    more.className = "note"; more.textContent = ` … and ${words.length - VOCAB_SHOWN} more`;
    box.append(more);
  }
}

// While typing: the model's own prompt check (unknown words, length), nothing generated.
function scheduleCheck() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(runCheck, 350);
}

async function runCheck() {
  const hint = $("hint");
  const prompt = $("prompt").value;
  const seq = ++checkSeq;
  if (!prompt.trim() || !modelKind) { hint.textContent = ""; return; }
  try {
    const r = await api("/api/check", {model: $("model").value, prompt});
    if (seq !== checkSeq) return;
    hint.className = r.error ? "note bad" : (r.warnings.length ? "note warn" : "note");
    hint.textContent = r.error || r.warnings.join(" ") || "";
  } catch (e) {
    if (seq === checkSeq) { hint.className = "note bad"; hint.textContent = e.message; }
  }
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

async function generate(event) {
  event.preventDefault();
  showMessage(""); showWarnings([]);
  const body = {
    model: $("model").value, prompt: $("prompt").value,
    num_images: numberOrNull("num-images"), seed: numberOrNull("seed"), guidance: numberOrNull("guidance"),
    candidates: numberOrNull("candidates"), rerank: $("rerank").checked, steps: numberOrNull("steps"),
  };
  if (!body.prompt.trim()) { showMessage("empty prompt: type what to draw, e.g. 'a red circle'"); return; }
  const button = $("generate");
  button.disabled = true;
  setProgress("sending…", 0, 0);
  try {
    const started = await api("/api/generate", body);
    showWarnings(started.warnings);
    await follow(started.job);
  } catch (e) {
    showMessage(e.message);
    setProgress(null);
  } finally {
    button.disabled = false;
  }
}

async function follow(jobId) {
  for (;;) {
    const job = await api(`/api/jobs/${jobId}`);
    if (job.status === "queued") {
      setProgress(`waiting: number ${job.position} in line`, 0, 0);
    } else if (job.status === "running") {
      setProgress(job.total ? `generating ${job.done} / ${job.total}` : "generating…", job.done, job.total);
    } else if (job.status === "error") {
      setProgress(null);
      showMessage(job.error);
      return;
    } else {
      setProgress(null);
      showWarnings(job.warnings);
      showResult(job);
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function showResult(job) {
  lastSeed = job.seed;
  $("seed-used").textContent = job.seed;
  $("timing").textContent = `${job.seconds}s on the server`;
  $("grid-link").href = `${job.grid}?download=1`;
  $("result-info").hidden = false;
  const gallery = $("gallery");
  gallery.replaceChildren();
  job.prompts.forEach((prompt, p) => {
    const row = document.createElement("div");
    row.className = "prompt-row";
    const h = document.createElement("h2");
    h.textContent = prompt;
    const tiles = document.createElement("div");
    tiles.className = "tiles";
    job.images[p].forEach((src, n) => {
      const fig = document.createElement("figure");
      fig.className = "tile";
      const img = document.createElement("img");
      img.src = src; img.width = job.image_size; img.height = job.image_size;
      img.alt = `${prompt} (${n + 1})`;
      const cap = document.createElement("figcaption");
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = job.scores ? `CLIP ${job.scores[p][n].toFixed(2)}` : "no CLIP score";
      const link = document.createElement("a");
      link.href = `${src}?download=1`; link.download = ""; link.textContent = "PNG";
      cap.append(score, link);
      fig.append(img, cap);
      tiles.append(fig);
    });
    row.append(h, tiles);
    gallery.append(row);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", generate);
  $("model").addEventListener("change", loadModel);
  $("prompt").addEventListener("input", scheduleCheck);
  $("prompt").addEventListener("keydown", (e) => {  // Ctrl/Cmd+Enter generates
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("controls").requestSubmit(); }
  });
  $("reuse-seed").addEventListener("click", () => { if (lastSeed !== null) $("seed").value = lastSeed; });
  loadModels().catch((e) => showMessage(e.message));
});
