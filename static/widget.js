/*
 * Iqra voice widget: one <script> tag and one call.
 *
 *   <script src="https://gateway.example/static/widget.js"></script>
 *   <script>
 *     const widget = IqraWidget.mount(document.getElementById("voice"), {
 *       middlewareUrl: "https://gateway.example", campaignId: "MyCampaign", regionId: "eu",
 *       fields: [{ name: "FirstName", label: "Your name", target: "dynamicVariable", required: true }],
 *     });
 *     widget.on("stateChange", ({ state, data }) => console.log(state, data));
 *   </script>
 *
 * Events (also dispatched on the element as "iqra:<name>"): stateChange {state, data}; registered
 * {uniqueRequestId, connectionId, queuePosition} each time the hub confirms the place in the queue (so
 * again after every reconnect); left {uniqueRequestId}; message {data} for text on the call's socket.
 *
 * Flow (as the official widget, plus what it lacked): POST /api/session/request; on 200 open the audio
 * socket; on 202 wait in the queue over SignalR (/sessionHub: Register, SessionReady, SessionFailed,
 * QueuePositionUpdated, Leave), registering again after every automatic reconnect. Leaving without a live
 * hub connection, or by closing the page, is a POST /api/session/leave/{id} beacon. The microphone is
 * asked for before the request, so a refusal costs no platform session and no place in the queue.
 * Audio: an AudioWorklet (audio-worklet.js) turns the microphone into 20 ms PCM16 LE frames at the
 * requested input rate; returned PCM16 is played through a small jitter buffer.
 *
 * The SignalR client is the official browser bundle, loaded on first need from vendor/signalr.js next
 * to this file (or options.signalRUrl), unless the page already has window.signalR.
 */
(function (global) {
  "use strict";

  var STATES = Object.freeze({
    IDLE: "idle",
    CONNECTING: "connecting",
    QUEUED: "queued",
    CONNECTED: "connected",
    ERROR: "error",
  });

  var PCM = 1;
  var FRAME_MS = 20;
  var DEFAULT_AUDIO = Object.freeze({
    inputSampleRate: 16000,
    outputSampleRate: 16000,
    inputBitsPerSample: 16,
    outputBitsPerSample: 16,
    bufferThresholdMs: 60,
    maxBufferMs: 1000,
  });

  var TEXTS = Object.freeze({
    start: "Start call",
    starting: "Connecting…",
    waiting: "Waiting…",
    retry: "Try again",
    leave: "Leave queue",
    hangUp: "Hang up",
    askingMic: "Waiting for microphone permission…",
    requesting: "Requesting a session…",
    joiningQueue: "Joining the queue…",
    connectingCall: "Connecting the call…",
    connected: "Connected! The call is live.",
    reconnecting: "Connection to the queue lost. Reconnecting…",
    callEnded: "The call has ended.",
    hungUp: "You hung up.",
    leftQueue: "You left the queue.",
    micDenied: "Microphone access was refused. Allow the microphone for this site in your browser's settings, then try again.",
    micMissing: "No microphone was found. Connect one and try again.",
    micBusy: "The microphone could not be started (is another application using it?).",
    micUnsupported: "This browser cannot capture audio here (a secure https:// page is needed).",
    network: "Could not reach the voice service. Check your internet connection and try again.",
    queueLost: "Lost the connection to the waiting queue. Please try again.",
    queueUnreachable: "Could not connect to the waiting queue. Please try again.",
    queueExpired: "Your place in the queue is no longer valid. Please start again.",
    callFailed: "The call connection failed.",
    callDropped: "The call was disconnected.",
  });

  // -- small helpers ------------------------------------------------------------------------------

  var scriptUrl = (document.currentScript && document.currentScript.src) || "";

  function assetUrl(name) {
    try {
      return new URL(name, scriptUrl || document.baseURI).href;
    } catch (e) {
      return name;
    }
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === undefined || value === null || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    (children || []).forEach(function (child) {
      node.appendChild(child);
    });
    return node;
  }

  /** "45 seconds", "about 3 minutes", "about 2 hours": a wait a person can read. */
  function durationInWords(seconds) {
    var s = Math.max(0, Math.ceil(Number(seconds)));
    if (s < 60) return s <= 1 ? "a moment" : s + " seconds";
    var minutes = Math.ceil(s / 60);
    if (minutes < 60) return "about " + minutes + (minutes === 1 ? " minute" : " minutes");
    var hours = Math.round(s / 3600);
    if (hours < 24) return "about " + hours + (hours === 1 ? " hour" : " hours");
    var days = Math.round(s / 86400);
    return "about " + days + (days === 1 ? " day" : " days");
  }

  /** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
  function parseRetryAfter(value, now) {
    if (!value) return null;
    var trimmed = String(value).trim();
    if (/^\d+$/.test(trimmed)) return parseInt(trimmed, 10);
    var when = Date.parse(trimmed);
    if (isNaN(when)) return null;
    return Math.max(0, Math.round((when - (now || Date.now())) / 1000));
  }

  function sentence(text) {
    var t = String(text || "").trim();
    if (!t) return "";
    return /[.!?…]$/.test(t) ? t : t + ".";
  }

  function retryText(seconds) {
    return seconds === null || seconds === undefined ? "Please try again later." : "Please try again in " + durationInWords(seconds) + ".";
  }

  /** The sentence shown for a refused session request. The server's own advice to retry is dropped
   * where the widget can say when (from Retry-After). */
  function describeRefusal(status, message, retryAfter) {
    var said = sentence(String(message || "").replace(/\s*Please try again[^.]*\.?/gi, ""));
    var inner = said.replace(/\.$/, "");
    switch (status) {
      case 400:
        return "The request was not accepted: " + (said || "it was malformed.");
      case 403:
        return "Calls cannot be started from your network" + (inner ? " (" + inner + ")" : "") +
          ". If you use a VPN or proxy, turn it off and try again.";
      case 413:
        return "The form data is too large. Shorten it and try again.";
      case 429:
        return "Too many call attempts" + (inner ? " (" + inner + ")" : "") + ". " + retryText(retryAfter);
      case 502:
        return (said || "The voice service could not start the call.") + " Please try again later.";
      case 503:
        return (said || "The service is busy.") + " " + retryText(retryAfter);
      default:
        return sentence(message) || "The server responded with status " + status + ".";
    }
  }

  function validateAudio(audio) {
    var problems = [];
    [["inputSampleRate", audio.inputSampleRate], ["outputSampleRate", audio.outputSampleRate]].forEach(function (pair) {
      var v = pair[1];
      if (!(Number.isInteger(v) && v >= 8000 && v <= 48000)) problems.push(pair[0] + " must be an integer from 8000 to 48000");
    });
    if (audio.inputBitsPerSample !== 16 || audio.outputBitsPerSample !== 16) problems.push("only 16-bit PCM is supported");
    if (!(audio.bufferThresholdMs >= 0)) problems.push("bufferThresholdMs must be >= 0");
    return problems;
  }

  var signalRPromise = null;

  /** The official SignalR browser bundle, loaded once per page. */
  function loadSignalR(url) {
    if (global.signalR && global.signalR.HubConnectionBuilder) return Promise.resolve(global.signalR);
    if (signalRPromise) return signalRPromise;
    signalRPromise = new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = url;
      script.async = true;
      script.onload = function () {
        if (global.signalR && global.signalR.HubConnectionBuilder) resolve(global.signalR);
        else reject(new Error(global.IqraSignalRMissing || "The SignalR client did not load."));
      };
      script.onerror = function () {
        reject(new Error("Could not load the SignalR client from " + url + "."));
      };
      document.head.appendChild(script);
    }).catch(function (err) {
      signalRPromise = null; // a later attempt may succeed (e.g. the bundle was installed meanwhile)
      throw err;
    });
    return signalRPromise;
  }

  // -- audio --------------------------------------------------------------------------------------

  /** Plays PCM16 LE chunks gap-free: playback starts bufferThresholdMs after the first chunk (and
   * again after any underrun), which absorbs network jitter without adding much delay. */
  function Player(context, destination, sampleRate, thresholdMs, maxBufferMs) {
    this.context = context;
    this.destination = destination;
    this.sampleRate = sampleRate;
    this.threshold = thresholdMs / 1000;
    this.maxBuffer = maxBufferMs / 1000;
    this.nextTime = 0;
    this.carry = null;
    this.playedSeconds = 0;
    this.dropped = 0;
  }

  Player.prototype.enqueue = function (arrayBuffer) {
    var bytes = new Uint8Array(arrayBuffer);
    if (this.carry !== null) {
      // A frame split mid-sample: glue the odd byte back on.
      var merged = new Uint8Array(bytes.length + 1);
      merged[0] = this.carry;
      merged.set(bytes, 1);
      bytes = merged;
      this.carry = null;
    }
    if (bytes.length % 2 === 1) {
      this.carry = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    var count = bytes.length / 2;
    if (count === 0) return;
    var view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    var buffer = this.context.createBuffer(1, count, this.sampleRate);
    var samples = buffer.getChannelData(0);
    for (var i = 0; i < count; i += 1) samples[i] = view.getInt16(i * 2, true) / 32768;

    var now = this.context.currentTime;
    if (this.nextTime < now) this.nextTime = now + this.threshold; // first chunk, or an underrun
    if (this.nextTime - now > this.maxBuffer + this.threshold) {
      // Far behind (e.g. the tab was in the background): drop rather than grow the delay forever.
      this.dropped += 1;
      return;
    }
    var source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.destination);
    source.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.playedSeconds += buffer.duration;
  };

  // -- the widget ---------------------------------------------------------------------------------

  function Widget(element, options) {
    if (!element || !element.appendChild) throw new TypeError("IqraWidget.mount: the first argument must be a DOM element.");
    var opts = options || {};
    if (!opts.middlewareUrl) throw new TypeError("IqraWidget.mount: options.middlewareUrl is required.");
    if (!opts.campaignId || !opts.regionId) throw new TypeError("IqraWidget.mount: options.campaignId and options.regionId are required.");
    this.element = element;
    this.middlewareUrl = String(opts.middlewareUrl).replace(/\/+$/, "");
    this.campaignId = opts.campaignId;
    this.regionId = opts.regionId;
    this.clientIdentifier = opts.clientIdentifier || null;
    this.headers = opts.headers || {};
    this.audio = Object.assign({}, DEFAULT_AUDIO, opts.audio || {});
    var problems = validateAudio(this.audio);
    if (problems.length) throw new TypeError("IqraWidget.mount: invalid audio options: " + problems.join("; ") + ".");
    this.fields = (opts.fields || []).map(function (f) {
      if (!f || !f.name) throw new TypeError("IqraWidget.mount: every field needs a name.");
      return Object.assign({ label: f.name, type: "text", target: "dynamicVariable", required: false }, f);
    });
    this.signalRUrl = opts.signalRUrl || assetUrl("vendor/signalr.js");
    this.workletUrl = opts.workletUrl || assetUrl("audio-worklet.js");
    this.texts = Object.assign({}, TEXTS, opts.texts || {});
    this.state = STATES.IDLE;
    this.stateData = {};
    this.listeners = {};
    this.attempt = 0;
    this.hub = null;
    this.requestId = null;
    this.socket = null;
    this.counters = { framesSent: 0, bytesSent: 0, framesReceived: 0, bytesReceived: 0 };
    this.render();
    var self = this;
    // A page going away cannot finish a hub call, and before the hub is up there is none to make: the
    // place would stay taken until the gateway's register timeout or disconnect grace. pagehide (not
    // beforeunload, which the visitor may still cancel) fires for closing, reloading and navigating.
    this.onPageHide = function () {
      self.leave({ closing: true });
    };
    global.addEventListener("pagehide", this.onPageHide);
  }

  Widget.prototype.render = function () {
    var self = this;
    var uid = "iqra-" + Math.random().toString(36).slice(2, 9);
    var inputs = this.fields.map(function (field, index) {
      var id = uid + "-f" + index;
      var input = field.type === "textarea"
        ? el("textarea", { id: id, name: field.name, required: field.required, placeholder: field.placeholder, rows: 3 })
        : el("input", { id: id, name: field.name, type: field.type, required: field.required, placeholder: field.placeholder,
            autocomplete: field.autocomplete || "off" });
      if (field.value !== undefined) input.value = field.value;
      return el("div", { className: "iqra-field" }, [
        el("label", { for: id, text: field.label + (field.required ? " *" : "") }),
        input,
      ]);
    });
    this.startButton = el("button", { type: "submit", className: "iqra-button iqra-start", text: this.texts.start });
    this.leaveButton = el("button", { type: "button", className: "iqra-button iqra-leave", text: this.texts.leave, hidden: true });
    this.hangUpButton = el("button", { type: "button", className: "iqra-button iqra-hangup", text: this.texts.hangUp, hidden: true });
    this.fieldset = el("fieldset", { className: "iqra-fields" }, inputs);
    this.form = el("form", { className: "iqra-form", novalidate: true }, [
      this.fieldset,
      el("div", { className: "iqra-actions" }, [this.startButton, this.leaveButton, this.hangUpButton]),
    ]);
    this.positionValue = el("span", { className: "iqra-position-value" });
    this.waitText = el("span", { className: "iqra-wait" });
    this.queueBox = el("div", { className: "iqra-queue", hidden: true }, [
      el("span", { className: "iqra-position-label", text: "Your place in the queue" }),
      this.positionValue,
      this.waitText,
    ]);
    this.liveIndicator = el("div", { className: "iqra-live", hidden: true, "aria-hidden": "true" }, [
      el("span", { className: "iqra-live-dot" }), el("span", { text: "Live" }),
    ]);
    this.status = el("p", { className: "iqra-status", role: "status", "aria-live": "polite", "aria-atomic": "true" });
    this.root = el("div", { className: "iqra-widget", "data-state": this.state }, [this.form, this.queueBox, this.liveIndicator, this.status]);
    this.element.appendChild(this.root);

    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.start();
    });
    this.leaveButton.addEventListener("click", function () {
      self.leave();
    });
    this.hangUpButton.addEventListener("click", function () {
      self.hangUp();
    });
  };

  Widget.prototype.on = function (type, listener) {
    (this.listeners[type] = this.listeners[type] || []).push(listener);
    return this;
  };

  Widget.prototype.off = function (type, listener) {
    var list = this.listeners[type] || [];
    var at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
    return this;
  };

  Widget.prototype.emit = function (type, detail) {
    (this.listeners[type] || []).slice().forEach(function (listener) {
      try {
        listener(detail);
      } catch (err) {
        console.error("IqraWidget: a " + type + " listener failed", err);
      }
    });
    this.element.dispatchEvent(new CustomEvent("iqra:" + type.toLowerCase(), { detail: detail, bubbles: true }));
  };

  Widget.prototype.setState = function (state, data) {
    this.state = state;
    this.stateData = data || {};
    this.updateView();
    this.emit("stateChange", { state: state, data: this.stateData });
  };

  /** Only the latest attempt may change the state: callbacks of an abandoned one are ignored. */
  Widget.prototype.current = function (attempt) {
    return attempt === this.attempt;
  };

  Widget.prototype.say = function (text, kind) {
    this.status.textContent = text || "";
    this.status.setAttribute("data-kind", kind || "info");
  };

  Widget.prototype.updateView = function () {
    var s = this.state;
    var d = this.stateData;
    var active = document.activeElement;
    // Disabling the focused button drops focus to <body>; remember that it was ours so it comes back.
    if (this.root.contains(active) && active !== this.root) this.ownsFocus = true;
    else if (active && active !== document.body) this.ownsFocus = false;
    this.root.setAttribute("data-state", s);
    var busy = s === STATES.CONNECTING || s === STATES.QUEUED;
    this.fieldset.disabled = busy || s === STATES.CONNECTED;
    this.startButton.hidden = s === STATES.CONNECTED;
    this.startButton.disabled = busy;
    this.startButton.textContent = s === STATES.CONNECTING ? this.texts.starting
      : s === STATES.QUEUED ? this.texts.waiting
        : s === STATES.ERROR ? this.texts.retry : this.texts.start;
    this.leaveButton.hidden = s !== STATES.QUEUED;
    this.hangUpButton.hidden = s !== STATES.CONNECTED;
    this.fieldset.hidden = s === STATES.CONNECTED;
    this.queueBox.hidden = s !== STATES.QUEUED;
    this.liveIndicator.hidden = s !== STATES.CONNECTED;

    if (s === STATES.QUEUED) {
      var pos = d.queuePosition;
      this.positionValue.textContent = pos ? "#" + pos : "…";
      var wait = d.estimatedWaitSeconds;
      this.waitText.textContent = wait === null || wait === undefined
        ? "Estimating your wait…"
        : "Estimated wait: " + durationInWords(wait);
      var line = pos ? "You are number " + pos + " in the queue. Please wait." : "You are in the queue. Please wait.";
      if (d.reconnecting) line = this.texts.reconnecting;
      this.say(line);
    } else if (s === STATES.CONNECTING) {
      this.say(d.message || this.texts.requesting);
    } else if (s === STATES.CONNECTED) {
      this.say(this.texts.connected, "success");
    } else if (s === STATES.ERROR) {
      this.say(d.message, "error");
    } else {
      this.say(d.message || "");
    }

    // Keep keyboard users in place: if the control they were on went away, move to the one that matters now.
    active = document.activeElement;
    var lost = !active || active === document.body || active.hidden || active.disabled || active.offsetParent === null;
    if (this.ownsFocus && lost) {
      var target = s === STATES.QUEUED ? this.leaveButton : s === STATES.CONNECTED ? this.hangUpButton
        : this.startButton.disabled ? null : this.startButton;
      if (target) target.focus();
    }
  };

  Widget.prototype.values = function () {
    var dynamicVariables = {};
    var metadata = {};
    var missing = [];
    var form = this.form;
    this.fields.forEach(function (field) {
      var input = form.elements.namedItem(field.name);
      var value = input ? String(input.value).trim() : "";
      if (field.required && !value) missing.push(field.label);
      if (value || !field.required) (field.target === "metadata" ? metadata : dynamicVariables)[field.name] = value;
    });
    return { dynamicVariables: dynamicVariables, metadata: metadata, missing: missing };
  };

  /** Start a call (the Start button does this). Allowed from idle or error. */
  Widget.prototype.start = function () {
    var self = this;
    if (this.state !== STATES.IDLE && this.state !== STATES.ERROR) return Promise.resolve(false);
    var values = this.values();
    if (values.missing.length) {
      this.setState(STATES.ERROR, { message: "Please fill in: " + values.missing.join(", ") + "." });
      return Promise.resolve(false);
    }
    var attempt = ++this.attempt;
    // Fetched while the visitor answers the microphone prompt, in case the answer is "queued".
    loadSignalR(this.signalRUrl).catch(function () {});
    this.counters = { framesSent: 0, bytesSent: 0, framesReceived: 0, bytesReceived: 0 };
    this.setState(STATES.CONNECTING, { message: this.texts.askingMic });
    return this.openMicrophone(attempt)
      .then(function () {
        if (!self.current(attempt)) return false;
        self.setState(STATES.CONNECTING, { message: self.texts.requesting });
        return self.requestSession(attempt, values);
      })
      .catch(function (err) {
        if (!self.current(attempt)) return false;
        self.fail(attempt, err && err.userMessage ? err.userMessage : (err && err.message) || String(err));
        return false;
      });
  };

  /** Asks for the microphone and builds the audio graph; playback shares the same context. */
  Widget.prototype.openMicrophone = function (attempt) {
    var self = this;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !global.AudioWorkletNode) {
      return Promise.reject(withUserMessage(this.texts.micUnsupported));
    }
    var Context = global.AudioContext || global.webkitAudioContext;
    // Created inside the click, so autoplay rules let it run.
    var context = new Context({ latencyHint: "interactive" });
    this.context = context;
    return navigator.mediaDevices
      .getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } })
      .catch(function (err) {
        var name = err && err.name;
        var text = name === "NotAllowedError" || name === "SecurityError" ? self.texts.micDenied
          : name === "NotFoundError" || name === "OverconstrainedError" ? self.texts.micMissing : self.texts.micBusy;
        throw withUserMessage(text);
      })
      .then(function (stream) {
        if (!self.current(attempt)) {
          stream.getTracks().forEach(function (t) { t.stop(); });
          return;
        }
        self.stream = stream;
        return context.audioWorklet.addModule(self.workletUrl).then(function () {
          if (!self.current(attempt)) return;
          var source = context.createMediaStreamSource(stream);
          var node = new AudioWorkletNode(context, "iqra-capture", {
            numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
            processorOptions: { targetRate: self.audio.inputSampleRate, frameMs: FRAME_MS },
          });
          var mute = context.createGain();
          mute.gain.value = 0; // keeps the worklet pulled by the graph without echoing the mic
          source.connect(node);
          node.connect(mute);
          mute.connect(context.destination);
          node.port.onmessage = function (event) {
            self.sendFrame(event.data);
          };
          self.capture = { source: source, node: node, mute: mute };
          self.player = new Player(context, context.destination, self.audio.outputSampleRate,
            self.audio.bufferThresholdMs, self.audio.maxBufferMs);
          if (context.state === "suspended") return context.resume();
        }, function () {
          throw withUserMessage("Could not load the audio processor from " + self.workletUrl + ".");
        });
      });
  };

  Widget.prototype.sendFrame = function (frame) {
    var ws = this.socket;
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // audio before the call starts is not wanted
    ws.send(frame);
    this.counters.framesSent += 1;
    this.counters.bytesSent += frame.byteLength;
  };

  Widget.prototype.requestSession = function (attempt, values) {
    var self = this;
    var payload = {
      campaignId: this.campaignId,
      regionId: this.regionId,
      transportType: 0,
      clientIdentifier: this.clientIdentifier,
      dynamicVariables: values.dynamicVariables,
      metadata: values.metadata,
      audioConfiguration: {
        inputEncodingType: PCM,
        inputSampleRate: this.audio.inputSampleRate,
        inputBitsPerSample: 16,
        outputEncodingType: PCM,
        outputSampleRate: this.audio.outputSampleRate,
        outputBitsPerSample: 16,
      },
    };
    return fetch(this.middlewareUrl + "/api/session/request", {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: Object.assign({ "Content-Type": "application/json", Accept: "application/json" }, this.headers),
      body: JSON.stringify(payload),
    })
      .catch(function () {
        throw withUserMessage(self.texts.network);
      })
      .then(function (response) {
        return response.text().then(function (text) {
          var body = null;
          try {
            body = text ? JSON.parse(text) : null;
          } catch (e) {
            body = null; // a proxy's HTML error page: fall back to the status
          }
          return { status: response.status, body: body, retryAfter: parseRetryAfter(response.headers.get("Retry-After")) };
        });
      })
      .then(function (result) {
        if (!self.current(attempt)) return false;
        var body = result.body || {};
        if (result.status === 200 && body.webSocketUrl) return self.connectVoice(attempt, body.webSocketUrl);
        if (result.status === 202 && body.uniqueRequestId) return self.waitInQueue(attempt, body.uniqueRequestId, body.queuePosition);
        var info = { status: result.status, message: describeRefusal(result.status, body.message, result.retryAfter) };
        if (result.retryAfter !== null) info.retryAfterSeconds = result.retryAfter;
        self.fail(attempt, info.message, info);
        return false;
      });
  };

  Widget.prototype.waitInQueue = function (attempt, requestId, position) {
    var self = this;
    this.requestId = requestId;
    this.setState(STATES.QUEUED, { queuePosition: position || null, estimatedWaitSeconds: null, uniqueRequestId: requestId });
    return loadSignalR(this.signalRUrl)
      .catch(function (err) {
        throw withUserMessage(self.texts.queueUnreachable + " (" + err.message + ")");
      })
      .then(function (signalR) {
        if (!self.current(attempt)) return false;
        var hub = new signalR.HubConnectionBuilder()
          // No cookies are needed, and omitting them keeps CORS simple for sites on other origins.
          .withUrl(self.middlewareUrl + "/sessionHub", { withCredentials: false })
          .withAutomaticReconnect({
            nextRetryDelayInMilliseconds: function (ctx) {
              if (ctx.elapsedMilliseconds > 120000) return null;
              return Math.min(10000, 500 * Math.pow(2, ctx.previousRetryCount));
            },
          })
          .configureLogging(signalR.LogLevel.Warning)
          .build();
        self.hub = hub;
        hub.on("SessionReady", function (event) {
          if (!self.current(attempt) || self.state !== STATES.QUEUED) return;
          var url = event && (event.webSocketUrl || event.WebSocketUrl);
          self.stopHub();
          if (!url) {
            self.fail(attempt, self.texts.callFailed);
            return;
          }
          self.connectVoice(attempt, url).catch(function (err) {
            self.fail(attempt, err.userMessage || err.message);
          });
        });
        hub.on("SessionFailed", function (event) {
          if (!self.current(attempt) || self.state !== STATES.QUEUED) return;
          self.stopHub();
          self.fail(attempt, sentence((event && event.message) || "The session could not be created. Please try again."));
        });
        hub.on("QueuePositionUpdated", function (event) {
          if (!self.current(attempt) || self.state !== STATES.QUEUED || !event) return;
          self.setState(STATES.QUEUED, Object.assign({}, self.stateData, {
            queuePosition: event.queuePosition || self.stateData.queuePosition,
            estimatedWaitSeconds: event.estimatedWaitSeconds === undefined ? null : event.estimatedWaitSeconds,
            reconnecting: false,
          }));
        });
        hub.onreconnecting(function () {
          if (!self.current(attempt) || self.state !== STATES.QUEUED) return;
          self.setState(STATES.QUEUED, Object.assign({}, self.stateData, { reconnecting: true }));
        });
        hub.onreconnected(function () {
          // A new connection is in no group: register again, or SessionReady would never reach us.
          if (!self.current(attempt) || self.state !== STATES.QUEUED) return;
          self.register(attempt, hub, requestId).catch(function (err) {
            if (reconnecting(hub)) return; // dropped again: the next onreconnected registers
            self.stopHub();
            self.fail(attempt, self.texts.queueLost);
          });
        });
        hub.onclose(function () {
          if (self.hub !== hub) return; // we stopped it ourselves
          self.hub = null;
          if (self.current(attempt) && self.state === STATES.QUEUED) self.fail(attempt, self.texts.queueLost);
        });
        return hub.start()
          .then(function () {
            if (!self.current(attempt)) {
              // Abandoned while connecting: give the place back instead of leaving it to be served.
              hub.invoke("Leave", requestId).catch(function () {}).then(function () { return hub.stop(); });
              return false;
            }
            return self.register(attempt, hub, requestId);
          })
          .catch(function (err) {
            if (!self.current(attempt) || self.state !== STATES.QUEUED) return false;
            // The connection dropped while Register was on its way: that call is lost, but the place is
            // not. The automatic reconnect registers again (onreconnected), so this is a blip, not a failure.
            if (self.hub === hub && reconnecting(hub)) return true;
            self.stopHub();
            throw withUserMessage(err && err.userMessage ? err.userMessage : hubMessage(err) || self.texts.queueUnreachable);
          });
      });
  };

  Widget.prototype.register = function (attempt, hub, requestId) {
    var self = this;
    return hub.invoke("Register", requestId).then(function (result) {
      if (!self.current(attempt) || self.state !== STATES.QUEUED) return true;
      var status = result && result.status ? String(result.status).toLowerCase() : "queued";
      if (result && result.webSocketUrl) {
        // Our turn came while we were not listening: the hub hands the URL back directly.
        self.stopHub();
        return self.connectVoice(attempt, result.webSocketUrl);
      }
      if (status === "failed" && result.message) {
        self.stopHub();
        self.fail(attempt, sentence(result.message || "The session could not be created. Please try again."));
        return false;
      }
      if (status === "unknown" || status === "notfound" || status === "not_found" || status === "expired" || status === "left") {
        self.stopHub();
        self.fail(attempt, self.texts.queueExpired);
        return false;
      }
      var update = { reconnecting: false };
      if (result && result.queuePosition) update.queuePosition = result.queuePosition;
      if (result && result.estimatedWaitSeconds !== undefined) update.estimatedWaitSeconds = result.estimatedWaitSeconds;
      self.setState(STATES.QUEUED, Object.assign({}, self.stateData, update));
      self.emit("registered", {
        uniqueRequestId: requestId, connectionId: hub.connectionId, queuePosition: update.queuePosition || null,
      });
      return true;
    });
  };

  /**
   * Whether a failed invocation only means that the connection under it dropped: the client rejects
   * the calls still pending on a dropped connection, and by the time a handler sees that rejection
   * the automatic reconnect has begun.
   */
  function reconnecting(hub) {
    return hub.state === "Reconnecting";
  }

  Widget.prototype.stopHub = function () {
    var hub = this.hub;
    this.hub = null;
    if (hub) {
      return hub.stop().catch(function () {});
    }
    return Promise.resolve();
  };

  /**
   * Leave the queue (the Leave button does this): tell the hub on a live connection, so the places
   * behind move up; with no live connection, or when the page is closing (options.closing), say it
   * over plain HTTP instead.
   */
  Widget.prototype.leave = function (options) {
    var self = this;
    if (this.state !== STATES.QUEUED) return Promise.resolve(false);
    var hub = this.hub;
    var requestId = this.requestId;
    var closing = Boolean(options && options.closing);
    this.attempt += 1;
    this.hub = null;
    this.releaseAudio();
    this.setState(STATES.IDLE, { message: this.texts.leftQueue });
    var told;
    if (hub && hub.state === "Connected" && !closing) {
      told = hub.invoke("Leave", requestId).catch(function (err) {
        console.warn("IqraWidget: Leave failed on the hub; leaving over HTTP", err);
        return self.leaveOverHttp(requestId, false);
      });
    } else {
      // The bundle or the connection is still on its way (or reconnecting), or the page is going: the
      // hub is stopped below (a stopped start never registers) and HTTP gives the place back now.
      told = this.leaveOverHttp(requestId, closing);
    }
    return told
      .then(function () {
        return hub ? hub.stop().catch(function () {}) : null;
      })
      .then(function () {
        self.emit("left", { uniqueRequestId: requestId });
        return true;
      });
  };

  /**
   * POST /api/session/leave/{id}, a simple CORS request (no body, no custom header: no preflight). A
   * closing page sends a beacon, which the browser delivers after the page is gone; otherwise (or when
   * the beacon is refused) a keepalive fetch, whose answer "left" waits for.
   */
  Widget.prototype.leaveOverHttp = function (requestId, closing) {
    var url = this.middlewareUrl + "/api/session/leave/" + encodeURIComponent(requestId);
    try {
      if (closing && navigator.sendBeacon && navigator.sendBeacon(url)) return Promise.resolve();
    } catch (e) {
      // sendBeacon throws for a URL it will not send to; fetch reports that below.
    }
    if (!global.fetch) return Promise.resolve();
    return global.fetch(url, { method: "POST", mode: "cors", credentials: "omit", keepalive: true })
      .then(function (response) {
        // 409: served, failed or already gone; nothing to give back.
        if (!response.ok && response.status !== 409) console.warn("IqraWidget: leaving the queue answered " + response.status);
      }, function (err) {
        console.warn("IqraWidget: could not leave the queue over HTTP", err);
      });
  };

  Widget.prototype.connectVoice = function (attempt, url) {
    var self = this;
    this.setState(STATES.CONNECTING, { message: this.texts.connectingCall });
    return new Promise(function (resolve) {
      var ws;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        self.fail(attempt, self.texts.callFailed);
        resolve(false);
        return;
      }
      ws.binaryType = "arraybuffer";
      self.socket = ws;
      var opened = false;
      ws.onopen = function () {
        if (!self.current(attempt)) {
          ws.close(1000);
          return;
        }
        opened = true;
        self.setState(STATES.CONNECTED, {});
        resolve(true);
      };
      ws.onmessage = function (event) {
        if (typeof event.data === "string") {
          self.emit("message", { data: event.data });
          return;
        }
        self.counters.framesReceived += 1;
        self.counters.bytesReceived += event.data.byteLength;
        if (self.player) self.player.enqueue(event.data);
      };
      ws.onclose = function (event) {
        if (self.socket === ws) self.socket = null;
        if (!self.current(attempt)) return;
        self.releaseAudio();
        if (!opened) {
          self.fail(attempt, self.texts.callFailed);
          resolve(false);
        } else if (event.code === 1000 || event.code === 1005) {
          self.setState(STATES.IDLE, { message: self.texts.callEnded, code: event.code, reason: event.reason });
        } else {
          self.fail(attempt, self.texts.callDropped, { code: event.code, reason: event.reason });
        }
      };
    });
  };

  /** End the call (the Hang up button does this). */
  Widget.prototype.hangUp = function () {
    if (this.state !== STATES.CONNECTED && this.state !== STATES.CONNECTING) return false;
    this.attempt += 1;
    var ws = this.socket;
    this.socket = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "user hung up");
    this.stopHub();
    this.releaseAudio();
    this.setState(STATES.IDLE, { message: this.texts.hungUp });
    return true;
  };

  Widget.prototype.fail = function (attempt, message, extra) {
    if (!this.current(attempt)) return;
    this.attempt += 1;
    var ws = this.socket;
    this.socket = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    this.stopHub();
    this.releaseAudio();
    this.setState(STATES.ERROR, Object.assign({ message: message }, extra || {}));
  };

  Widget.prototype.releaseAudio = function () {
    if (this.capture) {
      this.capture.node.port.postMessage("stop");
      this.capture.node.port.onmessage = null;
      this.capture.source.disconnect();
      this.capture.node.disconnect();
      this.capture = null;
    }
    if (this.stream) {
      this.stream.getTracks().forEach(function (t) { t.stop(); });
      this.stream = null;
    }
    if (this.context) {
      this.context.close().catch(function () {});
      this.context = null;
    }
    if (this.player) {
      this.playedSeconds = this.player.playedSeconds;
      this.player = null;
    }
  };

  /** Counters of the current (or last) call, for pages and tests. */
  Widget.prototype.stats = function () {
    return Object.assign({ playedMs: Math.round(1000 * (this.player ? this.player.playedSeconds : this.playedSeconds || 0)) }, this.counters);
  };

  /** Remove the widget from the page, ending any call or queue wait first. */
  Widget.prototype.destroy = function () {
    global.removeEventListener("pagehide", this.onPageHide);
    if (this.state === STATES.QUEUED) this.leave();
    else this.hangUp();
    this.attempt += 1;
    this.releaseAudio();
    if (this.root.parentNode) this.root.parentNode.removeChild(this.root);
    this.listeners = {};
  };

  /** The hub's own words from a failed invocation ("... HubException: <message>"), if any. */
  function hubMessage(err) {
    var text = err && err.message ? String(err.message) : "";
    var at = text.indexOf("HubException: ");
    return at >= 0 ? sentence(text.slice(at + "HubException: ".length)) : "";
  }

  function withUserMessage(text) {
    var err = new Error(text);
    err.userMessage = text;
    return err;
  }

  global.IqraWidget = Object.freeze({
    version: "1.0.0",
    States: STATES,
    /** Render the widget into `element`; returns the controller (start, leave, hangUp, on, off, stats, destroy). */
    mount: function (element, options) {
      return new Widget(element, options);
    },
    durationInWords: durationInWords,
    parseRetryAfter: parseRetryAfter,
  });
})(window);
