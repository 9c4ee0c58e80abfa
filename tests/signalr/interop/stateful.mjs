// withStatefulReconnect across a dropped WebSocket, for JSON and MessagePack.
//   node stateful.mjs --url http://127.0.0.1:P/chat --protocols json,msgpack [--stateful false]
// With --stateful false the same drop runs without the feature: a control showing the proxy really
// loses the in-flight messages (A's connection just closes).
// Client A reaches the server through a TCP proxy in this script; client B connects directly. The drop
// happens in two steps so that traffic is provably lost in flight:
//   1. cut the proxy's server-side sockets: the server sees an abrupt end, A still believes it is
//      connected; B broadcasts (the server buffers for A) and A sends (the proxy swallows the bytes);
//   2. cut the proxy's client-side sockets: A's WebSocket closes abnormally and the client re-attaches
//      once with the same connection token; both sides replay their unacknowledged messages.
// Each side must then see every message exactly once, in order; the connection id and groups survive.
import net from "node:net";
import { Inbox, attempt, build, errorText, main, parseArgs, withTimeout } from "./common.mjs";

const WAIT = 10000;

class CuttableProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = [];
    this.accepted = 0;
    this.server = net.createServer((client) => this._accept(client));
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve(this.server.address().port)));
  }

  _accept(client) {
    this.accepted += 1;
    const upstream = net.connect(this.targetPort, "127.0.0.1");
    const pair = { client, upstream, upstreamCut: false };
    this.pairs.push(pair);
    client.on("data", (chunk) => {
      if (!pair.upstreamCut) upstream.write(chunk);
    });
    upstream.on("data", (chunk) => client.write(chunk));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => {
      if (!pair.upstreamCut) client.destroy();
    });
    client.on("error", () => {});
    upstream.on("error", () => {});
  }

  // The server loses its socket without a WebSocket close frame; the client side stays open and
  // whatever the client writes from now on is lost.
  cutServerSide() {
    for (const pair of this.pairs) {
      pair.upstreamCut = true;
      pair.upstream.resetAndDestroy();
    }
  }

  cutClientSide() {
    const pairs = this.pairs;
    this.pairs = [];
    for (const pair of pairs) pair.client.resetAndDestroy();
  }

  close() {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function scenario(url, protocol, stateful) {
  const tag = `stateful-${protocol}:`;
  const proxy = new CuttableProxy(Number(new URL(url).port));
  const proxyPort = await proxy.listen();
  const proxied = new URL(url);
  proxied.port = String(proxyPort);
  const combo = { transport: "ws", protocol };
  const a = build(proxied.toString(), combo, (b) => (stateful ? b.withStatefulReconnect() : b));
  const b = build(url, combo);
  const events = { reconnecting: 0, closed: [] };
  a.onreconnecting(() => (events.reconnecting += 1));
  a.onclose((error) => events.closed.push(error ? errorText(error) : null));
  const aMessages = new Inbox(a, "Message");
  const aGroup = new Inbox(a, "GroupMessage");
  const bMessages = new Inbox(b, "Message");
  await withTimeout(Promise.all([a.start(), b.start()]), WAIT, "start");
  const out = {
    negotiatedStateful: a.connection.features.reconnect === true,
    idBefore: a.connectionId,
  };
  const group = `${tag}room`;
  await a.invoke("JoinGroup", group);

  // Delivered before the drop but usually not yet acknowledged (both sides Ack on a 1 s tick), so the
  // re-attach replays them and the receivers must drop the duplicates.
  await b.invoke("Broadcast", `${tag}b-before`);
  await a.send("Broadcast", `${tag}a-before`);
  await aMessages.waitFor((m) => m[0] === `${tag}b-before`, WAIT, "b-before at A");
  await bMessages.waitFor((m) => m[0] === `${tag}a-before`, WAIT, "a-before at B");

  proxy.cutServerSide();
  for (let i = 1; i <= 3; i++) await b.invoke("Broadcast", `${tag}b-during-${i}`);
  for (let i = 1; i <= 3; i++) await a.send("Broadcast", `${tag}a-during-${i}`);
  const echoDuringDrop = a.invoke("Echo", `${tag}echo-during`);
  const acceptedBefore = proxy.accepted;
  proxy.cutClientSide();

  out.echoDuringDrop = await attempt(() => withTimeout(echoDuringDrop, WAIT, "Echo sent during the drop"));
  out.reattached = proxy.accepted > acceptedBefore;
  out.stateAfterDrop = a.state;
  if (a.state === "Connected") {
    // Each side sends a final marker after the replay; anything replayed twice would arrive before it.
    await attempt(() => a.invoke("Broadcast", `${tag}a-final`));
    await attempt(() => b.invoke("Broadcast", `${tag}b-final`));
    await attempt(() => b.invoke("SendToGroup", group, "after re-attach"));
    out.finalAtA = await attempt(() => aMessages.waitFor((m) => m[0] === `${tag}b-final`, WAIT, "b-final at A"));
    out.finalAtB = await attempt(() => bMessages.waitFor((m) => m[0] === `${tag}a-final`, WAIT, "a-final at B"));
    out.groupAfter = await attempt(() => aGroup.waitFor((m) => m[1] === "after re-attach", WAIT, "group message"));
  }
  out.receivedByA = aMessages.tagged(`${tag}b-`);
  out.receivedByB = bMessages.tagged(`${tag}a-`);
  out.idAfter = a.connectionId;
  out.serverSideIdAfter = await attempt(() => a.invoke("GetConnectionId"));
  out.state = a.state;
  out.reconnectingEvents = events.reconnecting;
  out.closedBeforeStop = [...events.closed];
  await Promise.all([a.stop(), b.stop()]);
  await proxy.close();
  return out;
}

main(async () => {
  const args = parseArgs();
  const protocols = args.protocols.split(",");
  const stateful = (args.stateful ?? "true") === "true";
  // One scenario after the other: their Broadcasts reach every client of the server, and one that reaches a
  // client together with its handshake response is handled before the JS client has made its message
  // buffer (HubConnection creates it after `await handshakePromise`, a microtask that runs only after every
  // frame of that read), so it is never counted, and a later re-attach replays the last messages again.
  const results = [];
  for (const p of protocols) results.push(await attempt(() => scenario(args.url, p, stateful)));
  return Object.fromEntries(protocols.map((p, i) => [p, results[i]]));
});
