// Two example processes sharing one Redis: sends on one reach clients on the other, exactly once.
//   node backplane.mjs --url1 http://127.0.0.1:P1/chat --url2 http://127.0.0.1:P2/chat --combos ws:json,sse:json,lp:msgpack
// Per combination: sender S and member M1 on server 1, members M2 (and bystander N) on server 2.
import { Inbox, attempt, build, main, parseArgs, parseCombos, withTimeout } from "./common.mjs";

const WAIT = 10000;

async function scenario(url1, url2, combo) {
  const tag = `bp-${combo.name}:`;
  const clients = { sender: build(url1, combo), m1: build(url1, combo), m2: build(url2, combo), n: build(url2, combo) };
  const messages = {};
  const groupMessages = {};
  for (const [name, connection] of Object.entries(clients)) {
    messages[name] = new Inbox(connection, "Message");
    groupMessages[name] = new Inbox(connection, "GroupMessage");
  }
  await withTimeout(Promise.all(Object.values(clients).map((c) => c.start())), WAIT, "start");
  const group = `${tag}room`;
  await clients.m1.invoke("JoinGroup", group);
  await clients.m2.invoke("JoinGroup", group);
  await clients.sender.invoke("Broadcast", `${tag}all`);
  await clients.sender.invoke("SendToGroup", group, "to the group");
  // Markers sent last on each path; once they arrive, a duplicate of the earlier message would have too.
  await clients.sender.invoke("SendToGroup", group, "group marker");
  await clients.sender.invoke("Broadcast", `${tag}marker`);
  const out = {};
  out.waits = await attempt(async () => {
    await Promise.all(Object.entries(messages).map(([name, inbox]) =>
      inbox.waitFor((m) => m[0] === `${tag}marker`, WAIT, `broadcast marker at ${name}`)));
    await Promise.all(["m1", "m2"].map((name) =>
      groupMessages[name].waitFor((m) => m[1] === "group marker", WAIT, `group marker at ${name}`)));
    return "ok";
  });
  out.broadcast = Object.fromEntries(Object.entries(messages).map(([name, inbox]) => [name, inbox.tagged(tag)]));
  out.group = Object.fromEntries(Object.entries(groupMessages).map(([name, inbox]) => [name, inbox.items]));
  await Promise.all(Object.values(clients).map((c) => c.stop()));
  return out;
}

main(async () => {
  const args = parseArgs();
  const combos = parseCombos(args.combos);
  const results = await Promise.all(combos.map((combo) => attempt(() => scenario(args.url1, args.url2, combo))));
  return Object.fromEntries(combos.map((combo, i) => [combo.name, results[i]]));
});
