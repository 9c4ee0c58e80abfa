// The official widget's queue flow (reference §3) with the official @microsoft/signalr client:
// POST /api/session/request; on 202 connect to /sessionHub with automatic reconnect, handle
// SessionReady / SessionFailed / QueuePositionUpdated, invoke Register; on SessionReady stop SignalR and
// open the audio WebSocket, exchanging binary frames. Every step is printed as one JSON line on stdout
// for the Python test that drives the gateway.
//
// usage: node widget_flow.js BASE_URL TRANSPORT(WebSockets|ServerSentEvents|LongPolling) PROTOCOL(json|messagepack)
'use strict';
const signalR = require('@microsoft/signalr');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');
const WebSocket = require('ws');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const payload = {
  campaignId: 'CampA',
  regionId: 'eu',
  transportType: 0,
  dynamicVariables: { FirstName: 'Ada' },
  metadata: { source: 'interop' },
  audioConfiguration: {
    inputEncodingType: 1, inputSampleRate: 16000, inputBitsPerSample: 16,
    outputEncodingType: 1, outputSampleRate: 16000, outputBitsPerSample: 16,
  },
};

function audio(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let received = 0;
    const timer = setTimeout(() => reject(new Error('no audio within 10 s')), 10000);
    ws.on('open', () => {
      for (let i = 0; i < 5; i++) ws.send(Buffer.alloc(640)); // 20 ms of 16 kHz PCM16 silence each
    });
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return;
      received += 1;
      if (received === 1) {
        emit({ event: 'audio', bytes: data.byteLength });
        ws.close(1000);
      }
    });
    ws.on('close', () => { clearTimeout(timer); resolve(received); });
    ws.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

async function main() {
  const [base, transport, protocol] = process.argv.slice(2);
  const response = await fetch(base + '/api/session/request', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Origin: 'https://shop.example' },
    body: JSON.stringify(payload),
  });
  const data = await response.json();
  emit({ event: 'response', status: response.status, data });
  if (response.status !== 202) {
    process.exit(1);
  }
  const requestId = data.uniqueRequestId;
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(base + '/sessionHub', { transport: signalR.HttpTransportType[transport] })
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.Warning);
  if (protocol === 'messagepack') builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  connection.on('QueuePositionUpdated', (update) => emit({ event: 'position', ...update }));
  connection.on('SessionFailed', async (failure) => {
    emit({ event: 'failed', message: failure.message });
    await connection.stop();
    process.exit(0);
  });
  connection.on('SessionReady', async (ready) => {
    emit({ event: 'ready', webSocketUrl: ready.webSocketUrl });
    await connection.stop();
    try {
      const frames = await audio(ready.webSocketUrl);
      emit({ event: 'done', frames });
      process.exit(0);
    } catch (err) {
      emit({ event: 'error', message: String(err) });
      process.exit(1);
    }
  });
  connection.onreconnecting(() => emit({ event: 'reconnecting' }));
  connection.onreconnected(async () => {
    // The official widget registers only once; re-registering after a reconnect keeps the place.
    const result = await connection.invoke('Register', requestId);
    emit({ event: 'registered', again: true, result, connectionId: connection.connectionId });
  });
  await connection.start();
  const result = await connection.invoke('Register', requestId);
  emit({ event: 'registered', again: false, result, connectionId: connection.connectionId });
  try {
    await connection.invoke('Register', 'no-such-request');
  } catch (err) {
    emit({ event: 'register_error', message: err.message });
  }
}

main().catch((err) => {
  emit({ event: 'error', message: String(err && err.stack || err) });
  process.exit(1);
});
