"use strict";
// The taskserve operator dashboard. It reads the task router's JSON routes by
// relative URLs (so it works under any prefix) and polls them every second.
// Every value from the server is set as text (textContent), never as HTML.

(function () {
  const REFRESH_MS = 1000;
  const STATES = ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"];
  const TOKEN_KEY = "taskserve-admin-token:" + location.pathname;

  const view = { status: null, kind: null, taskId: null, record: null, payloadFor: null };
  let config = null;
  let deadLetters = [];
  const shown = { tasks: null, deadLetters: null }; // what the tables show, as JSON text
  let timer = null;
  let running = false;
  let again = false;

  const $ = (id) => document.getElementById(id);

  // -- building the page from data, as text only ------------------------------------
  function el(tag, options, children) {
    const node = document.createElement(tag);
    const o = options || {};
    if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
    if (o.className) node.className = o.className;
    if (o.href) node.setAttribute("href", o.href);
    if (o.type) node.setAttribute("type", o.type);
    if (o.title) node.setAttribute("title", String(o.title));
    if (o.data) {
      for (const [key, value] of Object.entries(o.data)) node.dataset[key] = String(value);
    }
    if (o.onclick) node.addEventListener("click", o.onclick);
    for (const child of children || []) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function taskLink(id) {
    return el("a", { href: "#task/" + encodeURIComponent(id), text: id, className: "task-link" });
  }

  function statusBadge(status) {
    const known = STATES.includes(status) ? status : "UNKNOWN";
    return el("span", { className: "status status-" + known, text: status });
  }

  function when(seconds) {
    if (typeof seconds !== "number") return "-";
    const date = new Date(seconds * 1000);
    return isNaN(date.getTime()) ? "-" : date.toLocaleString();
  }

  function figure(value) {
    return value === null || value === undefined ? "-" : String(value);
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  function shorten(value, length) {
    const s = String(value);
    return s.length > length ? s.slice(0, length - 1) + "\u2026" : s;
  }

  function progressText(progress) {
    if (!progress) return "";
    const percent = Math.round(progress.fraction * 100) + "%";
    return progress.message ? percent + " " + progress.message : percent;
  }

  function setNotice(id, message) {
    const node = $(id);
    node.textContent = message || "";
    node.hidden = !message;
  }

  function fields(id, pairs) {
    const items = [];
    for (const [label, value] of pairs) {
      const dd = el("dd", {}, [value instanceof Node ? value : String(value)]);
      items.push(el("div", {}, [el("dt", { text: label }), dd]));
    }
    $(id).replaceChildren(...items);
  }

  // -- talking to the router --------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function call(path, options) {
    const o = options || {};
    const headers = { Accept: "application/json" };
    if (o.body !== undefined) headers["Content-Type"] = "application/json";
    if (token()) headers.Authorization = "Bearer " + token();
    let response;
    try {
      response = await fetch(new URL(path, document.baseURI), {
        method: o.method || "GET",
        headers: headers,
        body: o.body === undefined ? undefined : JSON.stringify(o.body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (error) {
      return { ok: false, status: 0, detail: "the server cannot be reached (" + error.message + ")" };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (response.ok) return { ok: true, status: response.status, data: data };
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    return {
      ok: false,
      status: response.status,
      detail: detail || "no detail",
      capability: data && typeof data.capability === "string" ? data.capability : null,
    };
  }

  function failure(result, what) {
    if (result.status === 401) {
      const hint = config && config.token_required ? " Paste the admin token above." : "";
      return what + " refused (401): " + result.detail + hint;
    }
    if (result.status === 501) {
      return what + ": not offered by this adapter (" + result.capability + "): " + result.detail;
    }
    if (result.status === 0) return what + ": " + result.detail;
    return what + " failed (" + result.status + "): " + result.detail;
  }

  // -- the queue ----------------------------------------------------------------------
  async function refreshQueue() {
    const result = await call("api/queue");
    if (!result.ok) return setNotice("queue-notice", failure(result, "Queue figures"));
    const queue = result.data;
    const missing = Object.entries(queue.unavailable || {}).map(([cap, why]) => cap + ": " + why);
    setNotice("queue-notice", missing.length ? "Not offered by this adapter: " + missing.join("; ") : null);
    $("queue-name").textContent = queue.queue_name;
    $("fig-depth").textContent = figure(queue.queue_depth);
    $("fig-in-flight").textContent = figure(queue.in_flight);
    $("fig-consumers").textContent = figure(queue.consumers);
    $("fig-dl-failed").textContent = figure(queue.dead_letters_failed);
    $("fig-dl-unprocessable").textContent = figure(queue.dead_letters_unprocessable);
    const done = queue.finished;
    if (done) {
      const total = done.succeeded + done.failed + done.cancelled;
      $("fig-rate").textContent = (done.at_least ? "\u2265 " : "") + total;
      $("fig-rate-detail").textContent =
        "In the last " + done.window_s + " s: " + done.succeeded + " succeeded, " +
        done.failed + " failed, " + done.cancelled + " cancelled.";
    } else {
      $("fig-rate").textContent = "-";
      $("fig-rate-detail").textContent = "";
    }
  }

  // -- the recent tasks -----------------------------------------------------------------
  function statusTabs() {
    const tabs = [null, ...STATES].map((status) =>
      el("button", {
        type: "button",
        text: status || "All",
        data: { status: status || "" },
        onclick: () => {
          view.status = status;
          statusTabs();
          refreshSoon();
        },
      }),
    );
    for (const tab of tabs) tab.setAttribute("aria-pressed", String(tab.dataset.status === (view.status || "")));
    $("status-tabs").replaceChildren(...tabs);
  }

  function taskRow(task) {
    return el("tr", { data: { taskId: task.id } }, [
      el("td", {}, [taskLink(task.id)]),
      el("td", { text: task.name || "-" }),
      el("td", { className: "status-cell" }, [statusBadge(task.status)]),
      el("td", { text: task.attempts }),
      el("td", { text: progressText(task.progress) }),
      el("td", { text: when(task.created_at) }),
      el("td", { text: when(task.updated_at) }),
    ]);
  }

  async function refreshTasks() {
    const query = view.status ? "?limit=50&status=" + encodeURIComponent(view.status) : "?limit=50";
    const result = await call("../tasks" + query);
    if (!result.ok) return setNotice("tasks-notice", failure(result, "Task list"));
    setNotice("tasks-notice", null);
    const seen = JSON.stringify(result.data);
    if (seen === shown.tasks) return; // unchanged: keep the rows (and what is hovered)
    shown.tasks = seen;
    $("tasks-table").tBodies[0].replaceChildren(...result.data.map(taskRow));
    $("tasks-empty").hidden = result.data.length > 0;
  }

  // -- the dead letters -----------------------------------------------------------------
  function kindTabs() {
    const tabs = config.dead_letter_kinds.map((kind) => {
      const tab = el("button", {
        type: "button",
        text: kind,
        data: { kind: kind },
        onclick: () => {
          view.kind = kind;
          view.record = null;
          kindTabs();
          refreshSoon();
        },
      });
      tab.setAttribute("aria-pressed", String(kind === view.kind));
      return tab;
    });
    $("kind-tabs").replaceChildren(...tabs);
  }

  function outcome(nodes, refused) {
    const node = $("action-result");
    node.replaceChildren(...nodes.map((n) => (typeof n === "string" ? document.createTextNode(n) : n)));
    node.classList.toggle("refused", refused);
    node.hidden = false;
  }

  async function redrive(ids) {
    const body = ids ? { ids: ids, kind: view.kind } : { kind: view.kind };
    const result = await call("../dead-letters/redrive", { method: "POST", body: body });
    if (!result.ok) return outcome([failure(result, "Redrive")], true);
    const nodes = [];
    for (const done of result.data.redriven) {
      nodes.push(el("span", { className: "redriven" }, [
        "Redriven " + done.dead_letter_id + " as task ",
        taskLink(done.task_id),
        ". ",
      ]));
    }
    for (const left of result.data.not_redriven) {
      nodes.push(el("span", { text: "Not redriven " + left.id + ": " + left.reason + " " }));
    }
    outcome(nodes.length ? nodes : ["Nothing to redrive."], result.data.not_redriven.length > 0);
    refreshSoon();
  }

  async function purge(ids) {
    const body = ids ? { ids: ids, kind: view.kind } : { all: true, kind: view.kind };
    const result = await call("../dead-letters/purge", { method: "POST", body: body });
    if (!result.ok) return outcome([failure(result, "Purge")], true);
    const n = result.data.purged;
    outcome(["Purged " + n + (n === 1 ? " record." : " records.")], false);
    if (ids && ids.includes(view.record)) view.record = null;
    refreshSoon();
  }

  function deadLetterRow(record) {
    const buttons = [
      el("button", { type: "button", text: "View", onclick: () => showRecord(record.id) }),
    ];
    if (config.actions) {
      buttons.push(
        el("button", { type: "button", text: "Redrive", onclick: () => redrive([record.id]) }),
        el("button", { type: "button", text: "Purge", className: "danger", onclick: () => purge([record.id]) }),
      );
    }
    const error = record.error.type + ": " + record.error.message;
    return el("tr", { data: { recordId: record.id } }, [
      el("td", {}, [el("code", { text: record.id })]),
      el("td", {}, [record.task_id ? taskLink(record.task_id) : "-"]),
      el("td", { text: record.task_name || "(undecodable)" }),
      el("td", { text: shorten(error, 120), title: error }),
      el("td", { text: record.attempts }),
      el("td", { text: when(record.failed_at) }),
      el("td", {}, [el("div", { className: "row-actions" }, buttons)]),
    ]);
  }

  function showRecord(id) {
    view.record = id;
    renderRecord();
  }

  function renderRecord() {
    const record = deadLetters.find((r) => r.id === view.record);
    $("dead-letter-detail").hidden = !record;
    if (!record) return;
    $("dl-detail-id").textContent = record.id;
    fields("dl-detail-fields", [
      ["Queue", record.queue_name],
      ["Source queue", record.source_queue],
      ["Task", record.task_id ? taskLink(record.task_id) : "-"],
      ["Name", record.task_name || "(undecodable)"],
      ["Attempts", record.attempts],
      ["Enqueued", when(record.enqueued_at)],
      ["Failed", when(record.failed_at)],
    ]);
    const error = record.error;
    $("dl-detail-error").textContent =
      error.type + ": " + error.message + (error.traceback ? "\n\n" + error.traceback : "");
    $("dl-detail-payload").textContent =
      record.task_name === null
        ? "An undecodable message; its bytes in base64:\n" + (record.raw_base64 || "")
        : json({ args: record.args, kwargs: record.kwargs });
  }

  async function refreshDeadLetters() {
    const path = "../dead-letters?limit=100&kind=" + encodeURIComponent(view.kind);
    const result = await call(path);
    if (!result.ok) return setNotice("dead-letters-notice", failure(result, "Dead letters"));
    setNotice("dead-letters-notice", null);
    const seen = JSON.stringify(result.data);
    if (seen === shown.deadLetters) return;
    shown.deadLetters = seen;
    deadLetters = result.data;
    $("dead-letters-table").tBodies[0].replaceChildren(...deadLetters.map(deadLetterRow));
    $("dead-letters-empty").hidden = deadLetters.length > 0;
    renderRecord();
  }

  // -- one task ---------------------------------------------------------------------------
  async function refreshTask() {
    const id = view.taskId;
    const result = await call("../status/" + encodeURIComponent(id));
    if (view.taskId !== id) return;
    if (!result.ok) {
      setNotice("task-notice", failure(result, "Status"));
    } else {
      setNotice("task-notice", null);
      renderTask(result.data);
    }
    if (view.payloadFor !== id) {
      const payload = await call("api/payload/" + encodeURIComponent(id));
      if (view.taskId !== id) return;
      if (payload.ok) {
        view.payloadFor = id;
        setNotice("payload-notice", null);
        const p = payload.data;
        $("task-payload").textContent = json({ args: p.args, kwargs: p.kwargs });
        $("payload-meta").textContent =
          "Enqueued " + when(p.enqueued_at) + " as " + p.name + ", priority " + (p.priority || 0) +
          (p.retried_from ? ", retrying " + p.retried_from : "") + ".";
      } else {
        setNotice("payload-notice", failure(payload, "Payload"));
      }
    }
  }

  function renderTask(task) {
    const pairs = [
      ["Status", statusBadge(task.status)],
      ["Name", task.name || "-"],
      ["Queue", task.queue_name || "-"],
      ["Attempts", task.attempts],
      ["Created", when(task.created_at)],
      ["Updated", when(task.updated_at)],
    ];
    if (task.due_at !== null) pairs.push(["Due", when(task.due_at)]);
    if (task.retried_from) pairs.push(["Retried from", taskLink(task.retried_from)]);
    fields("task-fields", pairs);
    const progress = task.progress;
    $("task-progress").hidden = !progress;
    if (progress) {
      $("task-progress-bar").value = progress.fraction;
      $("task-progress-text").textContent = progressText(progress);
      $("task-progress-data").hidden = progress.data === null || progress.data === undefined;
      $("task-progress-data").textContent = progress.data == null ? "" : json(progress.data);
    }
    const error = task.error;
    $("task-error").hidden = !error;
    if (error) {
      $("task-error-type").textContent = error.type;
      $("task-error-message").textContent = error.message;
      $("task-error-traceback").textContent = error.traceback;
      $("task-error-traceback").hidden = !error.traceback;
      $("task-error-hidden").hidden = Boolean(error.traceback) || config.expose_tracebacks;
    }
  }

  // -- navigation, token, refresh ---------------------------------------------------------
  function route() {
    const match = /^#task\/(.+)$/.exec(location.hash);
    let id = null;
    if (match) {
      try {
        id = decodeURIComponent(match[1]);
      } catch (error) {
        id = null;
      }
    }
    if (id !== view.taskId) {
      view.payloadFor = null;
      $("task-fields").replaceChildren();
      $("task-payload").textContent = "";
      $("payload-meta").textContent = "";
      $("task-progress").hidden = true;
      $("task-error").hidden = true;
      setNotice("task-notice", null);
      setNotice("payload-notice", null);
    }
    view.taskId = id;
    $("task-id").textContent = id || "";
    $("overview-view").hidden = id !== null;
    $("task-view").hidden = id === null;
    refreshSoon();
  }

  function showTokenState() {
    $("token-state").textContent = token() ? "token set for this tab" : "no token";
  }

  async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      if (config === null) {
        const result = await call("api/config");
        if (!result.ok) return setNotice("queue-notice", failure(result, "Dashboard"));
        setNotice("queue-notice", null);
        start(result.data);
      }
      if (view.taskId !== null) {
        await refreshTask();
      } else {
        const parts = [refreshQueue()];
        if (config.task_listing) parts.push(refreshTasks());
        if (config.dead_letter_kinds.length) parts.push(refreshDeadLetters());
        await Promise.all(parts);
      }
      $("refresh-state").textContent = "Live, updated " + new Date().toLocaleTimeString();
    } finally {
      running = false;
      timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
      again = false;
    }
  }

  function refreshSoon() {
    if (config === null) return;
    if (running) {
      again = true;
    } else {
      clearTimeout(timer);
      timer = setTimeout(refresh, 0);
    }
  }

  function start(loaded) {
    config = loaded;
    $("token-form").hidden = !config.token_required;
    $("tasks-panel").hidden = !config.task_listing;
    $("dead-letters-panel").hidden = config.dead_letter_kinds.length === 0;
    $("read-only-note").hidden = config.actions;
    $("bulk-actions").hidden = !config.actions;
    view.kind = config.dead_letter_kinds[0] || null;
    statusTabs();
    if (view.kind) kindTabs();
    showTokenState();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    showTokenState();
    view.payloadFor = null;
    refreshSoon();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    refreshSoon();
  });
  $("redrive-all").addEventListener("click", () => redrive(null));
  $("purge-all").addEventListener("click", () => {
    if (window.confirm("Delete every " + view.kind + " dead letter? This cannot be undone.")) purge(null);
  });
  window.addEventListener("hashchange", route);
  route();
  refresh();
})();
