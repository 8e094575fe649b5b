// A Node.js program that talks to PyComms workers on Redis: ioredis and the CloudEvents
// SDK (npm `cloudevents`) only, written from docs/interop/redis.md.
//
//   INTEROP_URL=redis://127.0.0.1:6379/0 INTEROP_NAMESPACE=shop node redis.mjs ACTION ...
//
// Actions (the message types are those of tests/interop/interop_worker.py):
//   publish N              publish N interop.order_placed events (order_id 0..N-1)
//   send ORDER_ID          send an interop.ship command
//   request SKU QTY        ask interop.get_quote and print the reply
//   bad                    publish three bad events, then a good one (order_id 1000)
//   subscribe GROUP COUNT  durable subscriber GROUP of interop.notice: read COUNT events
//   unsubscribe GROUP      remove the durable subscriber GROUP
//   observe COUNT          passing observer of interop.notice: read COUNT events
//
// It prints one JSON object a line for what it received, and {"ready": true} once a
// consumer's subscription is in place.

import { randomBytes } from "node:crypto";
import { CloudEvent } from "cloudevents";
import Redis from "ioredis";

const SOURCE = "/interop/node-redis";
const NOTICE = "interop.notice";
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const MAX_EVENT = 1024 * 1024; // the worker's default max_message_size: refuse bigger input before parsing
const NS = process.env.INTEROP_NAMESPACE ?? "default";

/** A key of the namespace: pycomms:{NS}:<name>. */
const key = (name) => `pycomms:{${NS}}:${name}`;

/** A structured-mode CloudEvent as JSON (the SDK fills specversion, id and time). */
function event(type, kind, data, extensions = {}) {
  return new CloudEvent({ type, source: SOURCE, kind, datacontenttype: "application/json", data, ...extensions });
}

function readEvent(raw) {
  if (raw.length > MAX_EVENT) throw new Error(`event of ${raw.length} bytes, over the ${MAX_EVENT} allowed`);
  return new CloudEvent(JSON.parse(raw.toString("utf8")), false);
}

/** The field `d` of a stream entry's flat [name, value, ...] list. */
function fieldD(fields) {
  for (let i = 0; i < fields.length; i += 2) if (fields[i].toString() === "d") return fields[i + 1];
  return undefined;
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const show = (ce, more = {}) => print({ id: ce.id, type: ce.type, kind: ce.kind, data: ce.data, ...more });

async function publish(r, count) {
  const pipe = r.pipeline();
  const stream = key("ev:interop.order_placed");
  for (let n = 0; n < count; n++) {
    const ce = event("interop.order_placed", "event", { order_id: n, total: n + 0.5 }, { traceparent: TRACEPARENT });
    pipe.xadd(stream, "NOMKSTREAM", "*", "d", ce.toString());
  }
  const results = await pipe.exec();
  for (const [err] of results) if (err) throw err;
  print({ published: count, stored: results.filter(([, id]) => id !== null).length });
}

async function send(r, orderId) {
  await r.xadd(key("cmd:interop.ship"), "*", "d", event("interop.ship", "command", { order_id: orderId, carrier: "post" }).toString());
  print({ sent: orderId });
}

async function request(r, sku, qty, timeoutMs = 20000) {
  const replyTo = randomBytes(8).toString("hex");
  const replies = key(`reply:${replyTo}`);
  const ask = event("interop.get_quote", "request", { sku, qty }, { replyto: replyTo });
  await r.xadd(key("cmd:interop.get_quote"), "*", "d", ask.toString());
  let last = "0-0";
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      const got = await r.xreadBuffer("COUNT", 100, "BLOCK", 1000, "STREAMS", replies, last);
      for (const [, entries] of got ?? []) {
        for (const [id, fields] of entries) {
          last = id.toString();
          const reply = readEvent(fieldD(fields));
          if (reply.kind === "reply" && reply.causationid === ask.id) {
            show(reply, { pycommserror: reply.pycommserror ?? null, causationid: ask.id });
            return 0;
          }
        }
      }
    }
  } finally {
    await r.del(replies);
  }
  process.stderr.write(`no reply to request ${ask.id} within ${timeoutMs} ms\n`);
  return 1;
}

async function bad(r) {
  const stream = key("ev:interop.order_placed");
  const good = { order_id: 1000, total: 1.0 };
  const samples = {
    "not json": "this is not json",
    "numeric time": JSON.stringify({
      specversion: "1.0", id: "bad-time", source: SOURCE, type: "interop.order_placed", kind: "event",
      time: 1721400000.25, data: good,
    }),
    "invalid data": event("interop.order_placed", "event", { order_id: "not a number", total: 1.0 }).toString(),
  };
  for (const [what, raw] of Object.entries(samples)) {
    await r.xadd(stream, "NOMKSTREAM", "*", "d", raw);
    print({ bad: what });
  }
  await r.xadd(stream, "NOMKSTREAM", "*", "d", event("interop.order_placed", "event", good).toString());
  print({ published: 1 });
}

async function subscribe(r, group, count) {
  const stream = key(`ev:${NOTICE}`);
  try {
    await r.xgroup("CREATE", stream, group, "$", "MKSTREAM");
  } catch (err) {
    if (!String(err.message).includes("BUSYGROUP")) throw err;
  }
  print({ ready: true });
  let seen = 0;
  let start = "0"; // first what was delivered before and not acked
  while (seen < count) {
    const args = start === "0" ? [] : ["BLOCK", 1000];
    const got = await r.xreadgroupBuffer("GROUP", group, "c1", "COUNT", 100, ...args, "STREAMS", stream, start);
    const entries = (got ?? []).flatMap(([, es]) => es);
    if (start === "0" && entries.length === 0) {
      start = ">";
      continue;
    }
    for (const [id, fields] of entries) {
      if (seen === count) break;
      if (fields && fields.length) { // an entry trimmed away while pending comes back without fields
        show(readEvent(fieldD(fields)), { entry: id.toString() });
        seen += 1;
      }
      await r.xack(stream, group, id);
    }
  }
}

async function unsubscribe(r, group) {
  print({ destroyed: await r.xgroup("DESTROY", key(`ev:${NOTICE}`), group) });
}

async function observe(r, count) {
  const stream = key(`ev:${NOTICE}`);
  let last = "0-0"; // no such key: the stream, when it appears, is all new
  try { // from "now" as a concrete id, so nothing between this and the first read is missed
    const info = await r.xinfo("STREAM", stream);
    last = info[info.indexOf("last-generated-id") + 1];
  } catch (err) {
    if (!String(err.message).includes("no such key")) throw err;
  }
  print({ ready: true });
  let seen = 0;
  while (seen < count) {
    const got = await r.xreadBuffer("COUNT", 100, "BLOCK", 1000, "STREAMS", stream, last);
    for (const [, entries] of got ?? []) {
      for (const [id, fields] of entries) {
        last = id.toString();
        if (seen < count) {
          show(readEvent(fieldD(fields)));
          seen += 1;
        }
      }
    }
  }
}

async function main() {
  const [action, ...args] = process.argv.slice(2);
  const r = new Redis(process.env.INTEROP_URL ?? "redis://127.0.0.1:6379/0", { maxRetriesPerRequest: 3 });
  try {
    switch (action) {
      case "publish": await publish(r, Number(args[0])); return 0;
      case "send": await send(r, Number(args[0])); return 0;
      case "request": return await request(r, args[0], Number(args[1]));
      case "bad": await bad(r); return 0;
      case "subscribe": await subscribe(r, args[0], Number(args[1])); return 0;
      case "unsubscribe": await unsubscribe(r, args[0]); return 0;
      case "observe": await observe(r, Number(args[0])); return 0;
      default:
        process.stderr.write(`unknown action ${JSON.stringify(action)}; expected publish, send, request, bad, subscribe, unsubscribe or observe\n`);
        return 2;
    }
  } finally {
    r.disconnect();
  }
}

process.exitCode = await main();
