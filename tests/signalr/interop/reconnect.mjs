// withAutomaticReconnect across a server restart, for every combination at once.
//   node reconnect.mjs --url http://127.0.0.1:P/chat --combos ws:json,...
// Prints {"event":"connected"} once every client is up, then waits for the harness to restart the
// server on the same port and write "restarted" on stdin; each client must reconnect on its own.
import { attempt, build, emit, errorText, main, parseArgs, parseCombos, stdinLines, withTimeout } from "./common.mjs";

const WAIT = 20000;
// Short delays keep the test fast; the default policy would wait 2 s before its second attempt.
const DELAYS = [0, 100, 200, 300, 500, 500, 1000, 1000, 1000, 2000, 2000, 2000, 2000];

function watch(url, combo) {
  const connection = build(url, combo, (b) => b.withAutomaticReconnect(DELAYS));
  const seen = { reconnecting: [], reconnected: [], closed: [] };
  let onReconnected;
  const reconnected = new Promise((resolve) => (onReconnected = resolve));
  connection.onreconnecting((error) => seen.reconnecting.push(error ? errorText(error) : null));
  connection.onreconnected((id) => {
    seen.reconnected.push(id);
    onReconnected(id);
  });
  connection.onclose((error) => seen.closed.push(error ? errorText(error) : null));
  return { combo, connection, seen, reconnected };
}

main(async () => {
  const args = parseArgs();
  const stdin = stdinLines();
  const clients = parseCombos(args.combos).map((combo) => watch(args.url, combo));
  await withTimeout(Promise.all(clients.map((c) => c.connection.start())), WAIT, "start");
  for (const client of clients) {
    client.before = { id: client.connection.connectionId, echo: await client.connection.invoke("Echo", "before") };
  }
  emit({ event: "connected" });
  await stdin.next(WAIT, "the harness to restart the server");
  const results = {};
  for (const client of clients) {
    const after = await attempt(async () => {
      const id = await withTimeout(client.reconnected, WAIT, `${client.combo.name} onreconnected`);
      return {
        idFromCallback: id,
        connectionId: client.connection.connectionId,
        serverSideId: await client.connection.invoke("GetConnectionId"),
        echo: await client.connection.invoke("Echo", "after"),
        state: client.connection.state,
      };
    });
    // A copy: stop() below adds its own onclose call.
    results[client.combo.name] = { before: client.before, after, seen: structuredClone(client.seen) };
  }
  stdin.close();
  await Promise.all(clients.map((c) => c.connection.stop()));
  return results;
});
