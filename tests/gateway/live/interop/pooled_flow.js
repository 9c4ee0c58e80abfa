// The official @microsoft/signalr client behind `iqra-gateway serve --processes N`, sharing one pool of
// kept-alive connections with the page's own requests, as in a browser: start, a status request (REST)
// while connected, Register, then SessionReady. Every step is printed as one JSON line on stdout for the
// Python test that drives the gateway.
//
// The pool is Node's http.Agent (keep-alive, most recently freed socket first, like browsers), handed to
// the client as its HttpClient. (Node's fetch would hide the problem under test: its pool starts each
// request on its oldest idle slot, reopening a closed socket rather than reusing the page's.)
//
// usage: node pooled_flow.js BASE_URL TRANSPORT(WebSockets|ServerSentEvents|LongPolling) REQUEST_ID
'use strict';
const http = require('http');
const signalR = require('@microsoft/signalr');

const agent = new http.Agent({ keepAlive: true, scheduling: 'lifo' });

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// One request on the shared pool: resolves {status, body: Buffer}; rejects on a socket error or abort.
function request(method, url, { body, headers, signal, timeout } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: headers || {}, signal, timeout }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, statusText: res.statusMessage, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new signalR.TimeoutError()));
    req.on('error', (err) => reject(err.name === 'AbortError' ? new signalR.AbortError() : err));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

class PooledHttpClient extends signalR.HttpClient {
  async send(req) {
    const controller = new AbortController();
    if (req.abortSignal) {
      if (req.abortSignal.aborted) throw new signalR.AbortError();
      req.abortSignal.onabort = () => controller.abort();
    }
    const binary = req.content instanceof ArrayBuffer;
    const body = req.content === undefined || req.content === '' ? undefined
      : binary ? Buffer.from(req.content) : req.content;
    const headers = { 'X-Requested-With': 'XMLHttpRequest', ...(req.headers || {}) };
    if (body !== undefined) headers['Content-Type'] = binary ? 'application/octet-stream' : 'text/plain;charset=UTF-8';
    try {
      const res = await request(req.method, req.url, { body, headers, signal: controller.signal, timeout: req.timeout });
      if (res.status < 200 || res.status >= 300) {
        throw new signalR.HttpError(res.body.toString() || res.statusText, res.status);
      }
      const content = req.responseType === 'arraybuffer'
        ? res.body.buffer.slice(res.body.byteOffset, res.body.byteOffset + res.body.length)
        : res.body.toString();
      return new signalR.HttpResponse(res.status, res.statusText, content);
    } finally {
      if (req.abortSignal) req.abortSignal.onabort = null;
    }
  }
}

async function main() {
  const [base, transport, requestId] = process.argv.slice(2);
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(base + '/sessionHub', {
      transport: signalR.HttpTransportType[transport],
      httpClient: new PooledHttpClient(),
    })
    .configureLogging(signalR.LogLevel.Warning)
    .build();
  const ready = new Promise((resolve) => connection.on('SessionReady', resolve));
  let stopping = false;
  connection.onclose((err) => {
    if (!stopping) {
      emit({ event: 'error', message: 'connection closed: ' + String(err) });
      process.exit(1);
    }
  });
  await connection.start();
  emit({ event: 'started', connectionId: connection.connectionId });
  // The page's own request: afterwards its kept-alive socket is the pool's most recently freed one.
  const status = await request('GET', base + '/api/session/status/' + requestId);
  emit({ event: 'status', status: status.status, body: JSON.parse(status.body.toString()) });
  const result = await connection.invoke('Register', requestId);
  emit({ event: 'registered', result });
  const event = await ready;
  emit({ event: 'ready', webSocketUrl: event.webSocketUrl });
  stopping = true;
  await connection.stop();
  agent.destroy();
  process.exit(0);
}

main().catch((err) => {
  emit({ event: 'error', message: String((err && err.stack) || err) });
  process.exit(1);
});
