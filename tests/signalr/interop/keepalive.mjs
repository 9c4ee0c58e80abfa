// The JS client's own keep-alive against a server whose client timeout runs from the handshake on.
//   node keepalive.mjs --url http://127.0.0.1:P/chat --combos ws:json,sse:json --keepalive 200 --idle 2000
// Each connection starts, sends nothing of its own for --idle ms (only the client library's Pings,
// every --keepalive ms, as it does every 15 s by default), then invokes Echo.
// Result: {"<transport>-<protocol>": {closedWith: null or the close error, afterIdle: Echo's result or {error}}}
import { attempt, build, main, parseArgs, parseCombos, withTimeout } from "./common.mjs";

main(async () => {
  const args = parseArgs();
  const keepAlive = Number(args.keepalive);
  const idle = Number(args.idle);
  const out = {};
  await Promise.all(parseCombos(args.combos).map(async (combo) => {
    const connection = build(args.url, combo,
      (builder) => builder.withKeepAliveInterval(keepAlive).withServerTimeout(keepAlive * 10));
    let closedWith = null;
    connection.onclose((error) => { closedWith = error ? error.message : "closed"; });
    await withTimeout(connection.start(), 10000, `${combo.name} start`);
    await new Promise((resolve) => setTimeout(resolve, idle));
    out[combo.name] = { closedWith, afterIdle: await attempt(() => connection.invoke("Echo", "still here")) };
    await connection.stop();
  }));
  return out;
});
