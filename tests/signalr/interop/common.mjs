// Helpers shared by the Node scenario scripts: connection building, bounded waits, JSON-lines output.
// Scripts print {"event": ...} lines while running and exactly one {"result": ...} line at the end;
// the Python harness (tests/harness/interop.py) reads them.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";

export { signalR };

export const TRANSPORTS = {
  ws: signalR.HttpTransportType.WebSockets,
  sse: signalR.HttpTransportType.ServerSentEvents,
  lp: signalR.HttpTransportType.LongPolling,
};

export function parseArgs(argv = process.argv.slice(2)) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) {
      throw new Error(`bad argument list: ${argv.join(" ")}`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

// "ws:json,lp:msgpack" -> [{transport: "ws", protocol: "json", name: "ws-json"}, ...]
export function parseCombos(text) {
  return text.split(",").map((item) => {
    const [transport, protocol] = item.split(":");
    if (!(transport in TRANSPORTS) || !["json", "msgpack"].includes(protocol)) {
      throw new Error(`bad combo ${item}`);
    }
    return { transport, protocol, name: `${transport}-${protocol}` };
  });
}

export function build(url, { transport, protocol }, configure = (b) => b) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport: TRANSPORTS[transport] })
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  return configure(builder).build();
}

export function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

export function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Records every call of one client method and lets a scenario wait for a specific argument list.
export class Inbox {
  constructor(connection, method) {
    this.items = [];
    this._waiters = [];
    connection.on(method, (...args) => {
      this.items.push(args);
      for (const waiter of [...this._waiters]) waiter();
    });
  }

  // Resolves once some received call satisfies `predicate`.
  waitFor(predicate, ms, what) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          const found = this.items.find((args) => predicate(args));
          if (found !== undefined) {
            this._waiters = this._waiters.filter((w) => w !== check);
            resolve(found);
          }
        };
        this._waiters.push(check);
        check();
      }),
      ms,
      what,
    );
  }

  // The first argument of every call whose first argument starts with `prefix`.
  tagged(prefix, index = 0) {
    return this.items.filter((args) => typeof args[index] === "string" && args[index].startsWith(prefix))
      .map((args) => (args.length === 1 ? args[0] : args));
  }
}

// Runs `fn` and returns its value, or {error: text} so one broken scenario does not hide the rest.
export async function attempt(fn) {
  try {
    return await fn();
  } catch (error) {
    return { error: errorText(error) };
  }
}

// Yields stdin lines; scripts use it to wait for the harness (e.g. "restarted").
export function stdinLines() {
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  const waiters = [];
  rl.on("line", (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  return {
    next(ms, what) {
      if (queue.length) return Promise.resolve(queue.shift());
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), ms, what);
    },
    close() {
      rl.close();
    },
  };
}

// Run a script body; print its result, or the error and a non-zero exit code.
export function main(body) {
  body()
    .then((result) => {
      emit({ result });
      process.exit(0);
    })
    .catch((error) => {
      emit({ fatal: errorText(error), stack: error && error.stack });
      process.exit(1);
    });
}
