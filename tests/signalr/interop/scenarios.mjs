// The core hub scenarios for each transport/protocol combination, all combinations concurrently.
//   node scenarios.mjs --url http://127.0.0.1:P/chat --combos ws:json,sse:json,lp:json,ws:msgpack,lp:msgpack
// Result: {"<transport>-<protocol>": {scenario: observed value or {error}}}; the Python test asserts.
import { Inbox, attempt, build, main, parseArgs, parseCombos, signalR, withTimeout } from "./common.mjs";

const WAIT = 10000;
export const ECHO_VALUE = { text: "h\u00e9llo \u2713", list: [1, 2.5, null, true], nested: { k: "v" } };

async function runCombo(url, combo) {
  const tag = `${combo.name}:`;
  const one = build(url, combo);
  const two = build(url, combo);
  const messages = [new Inbox(one, "Message"), new Inbox(two, "Message")];
  const groupMessages = [new Inbox(one, "GroupMessage"), new Inbox(two, "GroupMessage")];
  await withTimeout(Promise.all([one.start(), two.start()]), WAIT, `${combo.name} start`);
  const out = {
    transport: one.connection.transport.constructor.name,
    connectionIdMatches: await attempt(async () => one.connectionId === (await one.invoke("GetConnectionId"))),
  };
  out.echo = await attempt(() => one.invoke("Echo", ECHO_VALUE));
  out.add = await attempt(() => one.invoke("Add", 2, 3.5));
  out.count = await attempt(
    () => withTimeout(new Promise((resolve, reject) => {
      const items = [];
      one.stream("Count", 5).subscribe({
        next: (item) => items.push(item),
        complete: () => resolve(items),
        error: reject,
      });
    }), WAIT, "Count stream"),
  );
  out.sum = await attempt(async () => {
    const subject = new signalR.Subject();
    const pending = one.invoke("Sum", subject);
    for (const value of [1, 2, 3, 4.5]) subject.next(value);
    subject.complete();
    return await withTimeout(pending, WAIT, "Sum result");
  });
  out.fail = await attempt(async () => {
    await one.invoke("Fail");
    return "no error";
  });
  out.unknownMethod = await attempt(() => one.invoke("NoSuchMethod", 1));
  out.badArgument = await attempt(() => one.invoke("Add", "1", 2));
  out.wrongArgCount = await attempt(() => one.invoke("Echo"));
  // 20 000 characters: a multi-byte VarInt length prefix in MessagePack, several TCP segments anywhere.
  out.bigEchoLength = await attempt(async () => (await one.invoke("Echo", "x".repeat(20000))).length);
  out.broadcast = await attempt(async () => {
    await one.invoke("Broadcast", `${tag}hello`);
    const what = `${combo.name} broadcast`;
    await Promise.all(messages.map((m) => m.waitFor((a) => a[0] === `${tag}hello`, WAIT, what)));
    return messages.map((m) => m.tagged(tag));
  });
  out.groups = await attempt(async () => {
    const group = `${tag}room`;
    await one.invoke("JoinGroup", group);
    await two.invoke("SendToGroup", group, "while member");
    await groupMessages[0].waitFor((a) => a[1] === "while member", WAIT, "group message");
    await one.invoke("LeaveGroup", group);
    await two.invoke("SendToGroup", group, "after leave");
    // Hub output to one connection is ordered: once the sentinel broadcast arrives, a group message
    // sent before it would have arrived too.
    await two.invoke("Broadcast", `${tag}sentinel`);
    await Promise.all(messages.map((m) => m.waitFor((a) => a[0] === `${tag}sentinel`, WAIT, "sentinel")));
    return { member: groupMessages[0].items, nonMember: groupMessages[1].items };
  });
  await Promise.all([one.stop(), two.stop()]);
  out.stateAfterStop = one.state;
  return out;
}

main(async () => {
  const args = parseArgs();
  const combos = parseCombos(args.combos);
  const results = await Promise.all(combos.map((combo) => attempt(() => runCombo(args.url, combo))));
  return Object.fromEntries(combos.map((combo, i) => [combo.name, results[i]]));
});
