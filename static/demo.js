// The demo page: mounts the widget and polls the demo API so a visitor can watch the queue move.
(function () {
  "use strict";

  var params = new URLSearchParams(window.location.search);
  var widget = IqraWidget.mount(document.getElementById("voice-widget"), {
    middlewareUrl: window.location.origin,
    campaignId: params.get("campaign") || "DemoCampaign",
    regionId: params.get("region") || "local",
    fields: [
      { name: "FirstName", label: "Your first name", target: "dynamicVariable", placeholder: "Ada", autocomplete: "given-name" },
      { name: "source", label: "Where did you hear about us?", target: "metadata", placeholder: "optional" },
    ],
  });
  window.demoWidget = widget; // for the browser tests and for poking at it from the console

  var log = document.getElementById("event-log");
  widget.on("stateChange", function (event) {
    var item = document.createElement("li");
    var time = new Date().toLocaleTimeString();
    var detail = event.data && (event.data.message || (event.data.queuePosition ? "position " + event.data.queuePosition : ""));
    item.textContent = time + " — " + event.state + (detail ? ": " + detail : "");
    log.insertBefore(item, log.firstChild);
    while (log.children.length > 8) log.removeChild(log.lastChild);
  });

  var queued = document.getElementById("stat-queued");
  var active = document.getElementById("stat-active");
  var capacity = document.getElementById("stat-capacity");
  var panelStatus = document.getElementById("panel-status");

  function refresh() {
    return fetch("/api/demo/stats", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
      .then(function (stats) {
        queued.textContent = String(stats.queued);
        active.textContent = String(stats.active);
        capacity.textContent = stats.capacity === null ? "∞" : String(stats.capacity);
      })
      .catch(function () {
        queued.textContent = active.textContent = "?";
      });
  }

  // Polling (not pushing) keeps the demo API trivial; once a second is plenty to see the queue move.
  function poll() {
    refresh().then(function () { window.setTimeout(poll, 1000); });
  }
  poll();

  document.getElementById("end-call").addEventListener("click", function () {
    var button = this;
    button.disabled = true;
    fetch("/api/demo/end-call", { method: "POST" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (result) { panelStatus.textContent = result.body.message || (result.ok ? "Done." : "Failed."); })
      .catch(function () { panelStatus.textContent = "Could not reach the demo API."; })
      .then(function () { button.disabled = false; refresh(); });
  });
})();
