/* The admin dashboard: asks for the admin token, polls GET /api/admin/queue every 2 s and shows the
 * deployment live, with pause/resume and the capacity override.
 *
 * The token lives in one closure variable and nowhere else (no storage, no cookie, not on window): reloading
 * the page forgets it. Every string from the server reaches the page through textContent, never as HTML. */
(function () {
  "use strict";

  const POLL_MS = 2000;
  const REQUEST_TIMEOUT_MS = 8000;
  const WINDOW_SECONDS = 300;
  const QUEUE_URL = "api/admin/queue?limit=50"; // relative: works under a proxy's path prefix too
  // Known outcomes first, in a fixed order with fixed colours; any other the server counts is added after.
  const OUTCOME_COLORS = {
    admitted: "#16a34a", queued: "#2563eb", invalid: "#ca8a04", blocked: "#dc2626", rate_limited: "#9333ea",
    queue_full: "#ea580c", store_unavailable: "#4b5563", platform_failure: "#db2777",
  };
  const SOURCES = { config: "from the configuration", platform: "from the platform", override: "admin override",
                    admin: "admin override" };

  const Stats = window.IqraAdminStats;
  const { TimeChart } = window.IqraAdminCharts;
  const $ = (id) => document.getElementById(id);

  let token = null;
  let operator = ""; // X-Operator: who acts, for the gateway's audit trail
  let generation = 0; // bumped when the token is forgotten: answers of older polls are dropped
  let timer = null;
  let polling = false;
  let again = false; // a poll was asked for while one was under way (after a control changed something)
  let previous = null; // the last snapshot, for the counters' deltas
  let charts = null;
  let waitWindow = new Stats.HistogramWindow(WINDOW_SECONDS);
  let errorWindow = new Stats.HistogramWindow(WINDOW_SECONDS);
  let polls = 0;

  // ------------------------------------------------------------------ talking to the admin API

  class ApiError extends Error {
    constructor(status, body) {
      super(body && typeof body.message === "string" ? body.message : `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(method, url, body) {
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (operator) headers["X-Operator"] = operator;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(url, { method, headers, cache: "no-store", credentials: "omit", signal: abort.signal,
                                    body: body === undefined ? undefined : JSON.stringify(body) });
    } finally {
      clearTimeout(timeout);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null; // a proxy's HTML error page, say: the status still tells what happened
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ------------------------------------------------------------------ signing in and out

  function showLogin(message) {
    $("dashboard").hidden = true;
    $("session-bar").hidden = true;
    $("login").hidden = false;
    $("connect").disabled = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function forgetToken(message) {
    token = null;
    generation += 1;
    clearTimeout(timer);
    timer = null;
    showLogin(message);
  }

  function onLogin(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = ""; // the field would otherwise keep a second copy
    if (!value) return showLogin("Enter the admin token.");
    token = value;
    // What the gateway keeps of a name anyway (and ASCII: a header cannot carry more).
    operator = $("operator-name").value.replace(/[^\w .@-]/g, "").slice(0, 64).trim();
    generation += 1;
    resetSeries();
    $("connect").disabled = true;
    $("login-error").hidden = true;
    pollNow();
  }

  // An answer that means the token cannot be used: back to the sign-in form, with why.
  function refusal(error) {
    if (!(error instanceof ApiError)) return null;
    if (error.status === 401) return "Wrong token: the gateway refused it. Enter the admin token again.";
    if (error.status === 404) return "The admin API is off on this gateway: set Admin.ApiToken in its configuration.";
    return null;
  }

  // ------------------------------------------------------------------ polling

  function pollNow() {
    clearTimeout(timer);
    timer = null;
    if (polling) {
      again = true; // its answer may predate the change: ask again as soon as it is in
      return;
    }
    poll();
  }

  async function poll() {
    const mine = generation;
    polling = true;
    try {
      const snapshot = await api("GET", QUEUE_URL);
      if (mine !== generation) return;
      showDashboard();
      render(snapshot);
      setStatus(`Live: updated at ${clock(snapshot.time)}, every ${POLL_MS / 1000} s.`, "ok");
    } catch (error) {
      if (mine !== generation) return;
      const refused = refusal(error);
      if (refused) return forgetToken(refused);
      if (!$("login").hidden) {
        // Not signed in yet: the sign-in form is where the visitor looks.
        forgetToken(`The gateway could not be asked (${describe(error)}). Try again.`);
        return;
      }
      setStatus(`${describe(error)}. Still trying every ${POLL_MS / 1000} s; the charts resume when it answers.`,
                "error");
    } finally {
      polling = false;
      if (mine === generation && token) timer = setTimeout(poll, again ? 0 : POLL_MS);
      again = false;
    }
  }

  function describe(error) {
    if (error instanceof ApiError) return `The gateway answered ${error.status}: ${error.message}`;
    if (error && error.name === "AbortError") return "The gateway did not answer in time";
    return "The gateway cannot be reached";
  }

  function showDashboard() {
    if (!$("dashboard").hidden) return;
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("session-bar").hidden = false;
    if (!charts) charts = makeCharts();
    charts.forEach((chart) => chart.resize());
  }

  function setStatus(text, kind) {
    $("status").textContent = text;
    $("status").className = "status " + kind;
    $("live-pill").textContent = kind === "ok" ? "Live" : "Reconnecting";
    $("live-pill").className = "pill " + kind;
  }

  // ------------------------------------------------------------------ what a snapshot shows

  function makeCharts() {
    return new Map([
      ["queue", new TimeChart($("chart-queue"), { integer: true,
        series: [{ label: "Waiting", color: "#2563eb", fill: "rgba(37, 99, 235, 0.12)" }] })],
      ["sessions", new TimeChart($("chart-sessions"), { integer: true, series: [
        { label: "Active", color: "#16a34a", fill: "rgba(22, 163, 74, 0.12)" },
        { label: "Pending", color: "#ca8a04" },
        { label: "Cap", color: "#dc2626", dash: [6, 4], stepped: true }] })],
      ["outcomes", new TimeChart($("chart-outcomes"), { unit: "/s", decimals: 2,
        series: Object.entries(OUTCOME_COLORS).map(([label, color]) => ({ label, color })) })],
      ["wait", new TimeChart($("chart-wait"), { unit: " s", series: [
        { label: "p50", color: "#2563eb" }, { label: "p95", color: "#9333ea", dash: [6, 4] }] })],
      ["error", new TimeChart($("chart-error"), { unit: " s", yRange: "signed", series: [
        { label: "p50", color: "#0891b2" }, { label: "p95", color: "#ea580c", dash: [6, 4] }] })],
    ]);
  }

  function resetSeries() {
    previous = null;
    waitWindow = new Stats.HistogramWindow(WINDOW_SECONDS);
    errorWindow = new Stats.HistogramWindow(WINDOW_SECONDS);
  }

  function render(snapshot) {
    polls += 1;
    const cap = snapshot.cap || {};
    const sessions = snapshot.sessions || {};
    const totals = snapshot.totals || {};
    const requests = totals.sessionRequests || {};
    const dt = previous ? snapshot.time - previous.time : 0;
    const rates = Stats.counterRates(previous && previous.requests, requests, dt);
    if (totals.waitSeconds) waitWindow.push(snapshot.time, totals.waitSeconds);
    if (totals.estimateErrorSeconds) errorWindow.push(snapshot.time, totals.estimateErrorSeconds);
    const wait = [waitWindow.quantile(0.5), waitWindow.quantile(0.95)];
    const error = [errorWindow.quantile(0.5), errorWindow.quantile(0.95)];

    text("stat-queue", snapshot.queueLength);
    text("stat-queue-sub", snapshot.queueLength === 1 ? "request waiting" : "requests waiting");
    text("stat-active", `${sessions.active} / ${cap.maxConcurrentSessions == null ? "∞" : cap.maxConcurrentSessions}`);
    text("stat-pending", `${sessions.pending} pending (being set up)`);
    text("stat-cap", cap.maxConcurrentSessions == null ? "No cap" : cap.maxConcurrentSessions);
    text("stat-cap-source", SOURCES[cap.source] || String(cap.source));
    $("stat-cap-source").dataset.source = String(cap.source);
    text("stat-dispatch", snapshot.paused ? "Paused" : "Running");
    $("stat-dispatch").className = "value " + (snapshot.paused ? "paused" : "running");
    text("stat-dispatch-sub", snapshot.paused ? "new requests queue" : "serving the queue");
    $("paused-banner").hidden = !snapshot.paused;
    $("pause").disabled = snapshot.paused;
    $("resume").disabled = !snapshot.paused;
    text("stat-wait", pair(wait, false));
    text("stat-wait-sub", `p50 / p95 of ${waitWindow.observations()} served from the queue in 5 min`);
    text("stat-error", pair(error, true));

    pushCharts(snapshot, rates, wait, error);
    renderEntries(snapshot);
    renderSessions(snapshot);
    renderChanges(snapshot);
    previous = { time: snapshot.time, requests };
  }

  function pushCharts(snapshot, rates, wait, error) {
    const time = snapshot.time;
    const sessions = snapshot.sessions || {};
    charts.get("queue").push(time, [snapshot.queueLength]);
    charts.get("sessions").push(time, [sessions.active, sessions.pending, (snapshot.cap || {}).maxConcurrentSessions]);
    const outcomes = charts.get("outcomes");
    outcomes.ensureSeries(Object.keys((snapshot.totals || {}).sessionRequests || {}).sort());
    outcomes.push(time, outcomes.series.map((s) => (rates ? rates[s.label] || 0 : null)));
    charts.get("wait").push(time, wait);
    charts.get("error").push(time, error);
  }

  function renderEntries(snapshot) {
    const entries = snapshot.entries || [];
    text("entries-caption", entries.length < snapshot.queueLength
      ? `The first ${entries.length} of ${snapshot.queueLength} waiting requests.`
      : `${snapshot.queueLength} waiting ${snapshot.queueLength === 1 ? "request" : "requests"}.`);
    fillTable("entries", entries, "Nobody is waiting.", (entry) => [
      entry.position, entry.uniqueRequestId, entry.campaignId, entry.regionId, age(entry.ageSeconds),
      entry.registered ? "yes" : "not yet", entry.dispatching ? "yes" : "no"]);
  }

  function renderSessions(snapshot) {
    const active = snapshot.activeSessions || [];
    const count = (snapshot.sessions || {}).active;
    text("sessions-caption", active.length < count ? `The first ${active.length} of ${count} active sessions.`
      : `${active.length} active ${active.length === 1 ? "session" : "sessions"}.`);
    fillTable("sessions", active, "No session is active.", (session) => [
      session.conversationSessionId, session.campaignId, age(session.ageSeconds)]);
  }

  function renderChanges(snapshot) {
    const changes = (snapshot.recentChanges || []).slice(0, 20);
    fillTable("changes", changes, "No change made with the admin API yet.", (change) => {
      const details = Object.entries(change)
        .filter(([key]) => !["time", "ip", "operator", "action"].includes(key))
        .map(([key, value]) => `${key} ${typeof value === "string" ? value : JSON.stringify(value)}`);
      return [typeof change.time === "number" ? clock(change.time) : change.time,
              [change.action, ...details].join(", "), change.operator || change.ip];
    });
  }

  function fillTable(id, rows, empty, cells) {
    const body = $(id).tBodies[0];
    const fresh = document.createElement("tbody");
    for (const row of rows) {
      const tr = fresh.insertRow();
      for (const value of cells(row)) tr.insertCell().textContent = value == null ? "–" : String(value);
    }
    if (!rows.length) {
      const cell = fresh.insertRow().insertCell();
      cell.colSpan = $(id).tHead.rows[0].cells.length;
      cell.className = "empty";
      cell.textContent = empty;
    }
    body.replaceWith(fresh);
  }

  // ------------------------------------------------------------------ controls

  async function act(method, url, body, done) {
    const mine = generation;
    setFeedback("Sending…", "");
    try {
      const answer = await api(method, url, body);
      if (mine !== generation) return;
      setFeedback(done(answer), "ok");
      pollNow();
    } catch (error) {
      if (mine !== generation) return;
      const refused = refusal(error);
      if (refused) return forgetToken(refused);
      setFeedback(error instanceof ApiError && error.status === 400 ? `Refused: ${error.message}` : describe(error),
                  "error");
    }
  }

  function setFeedback(message, kind) {
    $("control-feedback").textContent = message;
    $("control-feedback").className = "feedback " + kind;
  }

  function onCapacity(event) {
    event.preventDefault();
    const raw = $("capacity").value.trim();
    const value = Number(raw);
    if (!raw || !Number.isInteger(value) || value < 0) {
      setFeedback("Enter a whole number of sessions (0 or more), or clear the override.", "error");
      return;
    }
    act("PUT", "api/admin/capacity", { maxConcurrentSessions: value }, capacityDone);
  }

  function capacityDone(answer) {
    const cap = answer.maxConcurrentSessions == null ? "no cap" : `${answer.maxConcurrentSessions} sessions`;
    return `Capacity is now ${cap} (${SOURCES[answer.source] || answer.source}).`;
  }

  // ------------------------------------------------------------------ formatting

  function text(id, value) {
    $(id).textContent = value == null ? "–" : String(value);
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString();
  }

  // "p50 / p95 s", e.g. "4.2 / 31 s" or "-2.5 / +26 s"; a dash for a quantile without observations.
  function pair(values, signed) {
    if (values.every((value) => value == null)) return "–";
    const shown = values.map((value) => {
      if (value == null) return "–";
      const number = Math.abs(value) < 10 ? value.toFixed(1) : Math.round(value).toString();
      return (signed && value > 0 ? "+" : "") + number;
    });
    return `${shown[0]} / ${shown[1]} s`;
  }

  function age(value) {
    if (value == null) return "–";
    const total = Math.max(0, Math.floor(value));
    if (total < 60) return `${total} s`;
    if (total < 3600) return `${Math.floor(total / 60)} min ${String(total % 60).padStart(2, "0")} s`;
    return `${Math.floor(total / 3600)} h ${String(Math.floor(total / 60) % 60).padStart(2, "0")} min`;
  }

  // ------------------------------------------------------------------ wiring

  $("login-form").addEventListener("submit", onLogin);
  $("sign-out").addEventListener("click", () => forgetToken("Token forgotten. Enter it again to continue."));
  $("pause").addEventListener("click", () => act("POST", "api/admin/dispatch/pause", undefined,
    (answer) => (answer.paused ? "Dispatching paused: new requests queue." : "Dispatching is running.")));
  $("resume").addEventListener("click", () => act("POST", "api/admin/dispatch/resume", undefined,
    (answer) => (answer.paused ? "Dispatching is still paused." : "Dispatching resumed.")));
  $("capacity-form").addEventListener("submit", onCapacity);
  $("clear-capacity").addEventListener("click", () => act("PUT", "api/admin/capacity",
    { maxConcurrentSessions: null }, capacityDone));
  showLogin("");

  // For the browser test and a curious operator's console: what the charts hold, never the token.
  window.adminDashboard = Object.freeze({
    get polls() { return polls; },
    get signedIn() { return token !== null; },
    chart: (name) => (charts && charts.get(name) ? charts.get(name).snapshot() : null),
  });
})();
