// The review workbench page: keyboard-only review of a run's items through the JSON API
// served by matteflow.pipelines.review_server. No framework, no build step.
"use strict";
(function () {
  const BACKGROUNDS = [
    ["checker", "checkerboard"],
    ["white", "white"],
    ["black", "black"],
    ["brand", "brand colour"],
  ];
  const WORDS = { accept: "accepted", reject: "rejected", retry: "retry" };
  const state = {
    items: [],
    index: 0,
    bg: 0,
    zoom: false,
    firstShown: new Map(), // id -> performance.now() of its first display
    pendingScore: new Map(), // id -> score given before a decision
    history: [], // ids decided on this page, latest last: what `u` takes back
    models: [],
    runModel: "",
    reviewer: "",
    chain: Promise.resolve(), // decisions are posted one after another, in key order
    inflight: 0,
  };
  const $ = (id) => document.getElementById(id);

  function announce(text) {
    $("announce").textContent = text;
  }

  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
    return data;
  }

  function decisionText(item) {
    if (!item.decision) return "pending";
    let text = WORDS[item.decision];
    if (item.decision === "retry" && item.model) text += " with " + item.model;
    return text;
  }

  function fmt(value) {
    return value === null || value === undefined ? "–" : value.toFixed(3);
  }

  function bgClass() {
    return "bg-" + BACKGROUNDS[state.bg][0];
  }

  function tile(n) {
    const item = state.items[n];
    const button = document.createElement("button");
    button.type = "button";
    button.id = "tile-" + n;
    button.tabIndex = -1;
    const thumb = document.createElement("span");
    thumb.className = "thumb " + bgClass();
    if (item.cutout) {
      const img = document.createElement("img");
      img.src = item.cutout + "?size=256";
      img.alt = "";
      thumb.appendChild(img);
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.id;
    const badge = document.createElement("span");
    badge.className = "badge";
    const score = document.createElement("span");
    score.className = "score";
    button.append(thumb, name, badge, " ", score);
    button.addEventListener("click", () => show(n));
    const li = document.createElement("li");
    li.appendChild(button);
    return li;
  }

  function updateTile(n) {
    const item = state.items[n];
    const button = $("tile-" + n);
    const badge = button.querySelector(".badge");
    badge.className = "badge " + (item.decision || "pending");
    badge.textContent = decisionText(item);
    button.querySelector(".score").textContent = item.score ? "score " + item.score : "";
  }

  function updateProgress() {
    const decided = state.items.filter((i) => i.decision).length;
    $("progress").textContent =
      `${decided} of ${state.items.length} decided · reviewer ${state.reviewer}` +
      ` · run model ${state.runModel}`;
  }

  function renderFacts(item) {
    $("fact-uncertainty").textContent = fmt(item.uncertainty);
    $("fact-category").textContent = item.category || "–";
    $("fact-decision").textContent = decisionText(item);
    const pending = state.pendingScore.get(item.id);
    $("fact-score").textContent = item.score
      ? String(item.score)
      : pending ? pending + " (not yet saved)" : "–";
    $("fact-background").textContent = BACKGROUNDS[state.bg][1];
  }

  function setImage(img, url, alt) {
    if (url) {
      img.src = url;
      img.alt = alt;
    } else {
      img.removeAttribute("src");
      img.alt = "none: " + alt;
    }
  }

  function renderImages(item) {
    const bgName = BACKGROUNDS[state.bg][1];
    const stage = $("stage");
    stage.className = "stage " + bgClass() + (state.zoom ? " zoomed" : "");
    if (state.zoom) {
      setImage($("cutout"), item.edge, `Edge band of the cutout of ${item.id}, magnified, over ${bgName}`);
      $("cutout-caption").textContent = "Cutout, edge band magnified, over " + bgName;
    } else {
      setImage($("cutout"), item.cutout, `Cutout of ${item.id} over ${bgName}`);
      $("cutout-caption").textContent = "Cutout over " + bgName;
    }
    setImage($("mask"), item.mask, `Mask of ${item.id}`);
    setImage($("source"), item.source, `Source image of ${item.id}`);
  }

  function show(n, focus = true) {
    if (!state.items.length) return;
    state.index = Math.max(0, Math.min(state.items.length - 1, n));
    const item = state.items[state.index];
    if (!state.firstShown.has(item.id)) state.firstShown.set(item.id, performance.now());
    $("detail-title").textContent = `${item.id} (${state.index + 1} of ${state.items.length})`;
    renderFacts(item);
    renderImages(item);
    state.items.forEach((_, i) => {
      const button = $("tile-" + i);
      const current = i === state.index;
      button.tabIndex = current ? 0 : -1;
      if (current) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    });
    const button = $("tile-" + state.index);
    if (focus) button.focus();
    button.scrollIntoView({ block: "nearest" });
  }

  // Posts run one after another, in key order: a key that depends on what an earlier one
  // saved (a score after a decision, undo) is worked out when the earlier posts are done.
  function enqueue(task) {
    state.inflight += 1;
    document.body.dataset.inflight = String(state.inflight);
    state.chain = state.chain.then(task).finally(() => {
      state.inflight -= 1;
      document.body.dataset.inflight = String(state.inflight);
    });
  }

  function bodyFor(n, decision, model) {
    const item = state.items[n];
    const score = decision === "undo" ? null : state.pendingScore.get(item.id) ?? item.score ?? null;
    return {
      id: item.id,
      decision: decision,
      score: score,
      seconds: (performance.now() - state.firstShown.get(item.id)) / 1000,
      model: model || null,
    };
  }

  async function post(n, body) {
    const item = state.items[n];
    try {
      Object.assign(item, await api("/api/decisions", body));
    } catch (err) {
      announce(`${item.id}: not saved: ${err.message}`);
      return;
    }
    if (state.pendingScore.get(item.id) === body.score) state.pendingScore.delete(item.id);
    if (body.decision !== "undo") state.history.push(n);
    updateTile(n);
    updateProgress();
    if (n === state.index) renderFacts(item);
    announce(`${item.id}: ${body.decision === "undo" ? "undone, now " : ""}${decisionText(item)}`);
  }

  function decideAndAdvance(decision, model) {
    const n = state.index;
    const body = bodyFor(n, decision, model); // seconds up to the key press
    enqueue(() => post(n, body));
    show(n + 1);
  }

  function scoreKey(score) {
    const n = state.index;
    const item = state.items[n];
    state.pendingScore.set(item.id, score);
    renderFacts(item);
    enqueue(async () => {
      if (state.pendingScore.get(item.id) !== score) return; // another score came after it
      if (item.decision) {
        // A scored decision is a new row with the same decision: undo takes the score back.
        await post(n, bodyFor(n, item.decision, item.model));
      } else {
        announce(`${item.id}: score ${score}, saved with the decision`);
      }
    });
  }

  function undo() {
    enqueue(async () => {
      const n = state.history.pop();
      if (n === undefined) {
        announce("Nothing to undo");
        return;
      }
      show(n);
      await post(n, bodyFor(n, "undo"));
    });
  }

  function openModels() {
    const item = state.items[state.index];
    const box = $("model-options");
    box.textContent = "";
    const preferred = state.models.find((m) => m.name !== state.runModel) || state.models[0];
    state.models.forEach((m, i) => {
      const label = document.createElement("label");
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "model";
      radio.value = m.name;
      radio.id = "model-" + i;
      radio.checked = m === preferred;
      const run = m.name === state.runModel ? ", the run's model" : "";
      const facts = `${m.task}, ${m.input_size} px, licence ${m.licence_class}${run}`;
      label.append(radio, ` ${m.name} (${facts})`);
      box.appendChild(label);
    });
    $("models-title").textContent = "Retry " + item.id + " with another model";
    $("models").showModal();
    const checked = box.querySelector("input:checked");
    if (checked) checked.focus();
  }

  // The retry is decided here, synchronously, not on the dialog's (queued) close event, so a
  // key pressed right after Enter already applies to the next item.
  function closeModels(retry) {
    const checked = $("model-options").querySelector("input:checked");
    $("models").close();
    if (retry && checked) decideAndAdvance("retry", checked.value);
    else show(state.index);
  }

  $("models").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.type === "radio") {
      event.preventDefault();
      closeModels(true);
    }
  });
  $("models-form").addEventListener("submit", (event) => {
    event.preventDefault();
    closeModels(event.submitter !== null && event.submitter.value === "retry");
  });
  $("models").addEventListener("cancel", (event) => {
    event.preventDefault();
    closeModels(false);
  });

  $("help").addEventListener("close", () => show(state.index));

  function toggleHelp() {
    if ($("help").open) $("help").close();
    else $("help").showModal();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if ($("models").open) return;
    if ($("help").open) {
      if (event.key === "?") toggleHelp();
      return;
    }
    if (!state.items.length && event.key !== "?") return;
    const key = event.key;
    let handled = true;
    if (key === "j") show(state.index + 1);
    else if (key === "k") show(state.index - 1);
    else if (key === "a") decideAndAdvance("accept");
    else if (key === "r") decideAndAdvance("reject");
    else if (/^[1-5]$/.test(key)) scoreKey(Number(key));
    else if (key === "m") openModels();
    else if (key === "u") undo();
    else if (key === "b") {
      state.bg = (state.bg + 1) % BACKGROUNDS.length;
      document.querySelectorAll("#grid .thumb").forEach((t) => (t.className = "thumb " + bgClass()));
      show(state.index, false);
      announce("Background: " + BACKGROUNDS[state.bg][1]);
    } else if (key === "z") {
      state.zoom = !state.zoom;
      show(state.index, false);
      announce(state.zoom ? "Zoom on the edge band" : "Whole cutout");
    } else if (key === "?") toggleHelp();
    else handled = false;
    if (handled) event.preventDefault();
  });

  async function start() {
    const [items, models, summary] = await Promise.all([
      api("/api/items"),
      api("/api/models"),
      api("/api/summary"),
    ]);
    state.items = items;
    state.models = models.models;
    state.runModel = models.run_model;
    state.reviewer = summary.reviewer;
    document.documentElement.style.setProperty("--brand", models.brand);
    const grid = $("grid");
    items.forEach((_, n) => grid.appendChild(tile(n)));
    items.forEach((_, n) => updateTile(n));
    updateProgress();
    if (items.length) show(0);
    else $("detail-title").textContent = "Nothing to review";
    document.body.dataset.ready = "true";
  }

  start().catch((err) => {
    $("progress").textContent = "Could not load the items: " + err.message;
  });
})();
