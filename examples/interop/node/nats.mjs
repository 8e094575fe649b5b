// A Node.js program that talks to PyComms workers on NATS JetStream: nats.js (npm `nats`, v2)
// and the CloudEvents SDK (npm `cloudevents`) only, written from docs/interop/nats.md.
//
//   INTEROP_URL=nats://127.0.0.1:4222 INTEROP_NAMESPACE=shop node nats.mjs ACTION ...
//
// Actions (the message types are those of tests/interop/interop_worker.py):
//   publish N              publish N interop.order_placed events (order_id 0..N-1)
//   send ORDER_ID          send an interop.ship command
//   request SKU QTY        ask interop.get_quote and print the reply
//   bad                    publish three bad events, then a good one (order_id 1000)
//   subscribe GROUP COUNT  durable subscriber GROUP of interop.notice (a durable pull consumer): read COUNT events
//   unsubscribe GROUP      delete the durable consumer GROUP
//   observe COUNT          passing observer of interop.notice (a plain subscription): read COUNT events
//
// It prints one JSON object a line for what it received, and {"ready": true} once a
// consumer's subscription is in place. Every message is one structured-mode CloudEvent,
// published with JetStream (the ack is the promise it is stored), headers Content-Type
// application/cloudevents+json and Nats-Msg-Id = the event's id.

import { randomBytes } from "node:crypto";
import { CloudEvent } from "cloudevents";
import { AckPolicy, DeliverPolicy, connect, headers, nanos } from "nats";

const SOURCE = "/interop/node-nats";
const NOTICE = "interop.notice";
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const MAX_EVENT = 1024 * 1024; // the worker's default max_message_size: refuse bigger input before parsing
const NS = process.env.INTEROP_NAMESPACE ?? "default";

/** The namespace's token in names: as it is when plain, else `_` → `__` and `.` → `_d`. */
const nsToken = (ns) => (/^[A-Za-z0-9_-]+$/.test(ns) ? ns : ns.replace(/_/g, "__").replace(/\./g, "_d"));
/** A subject of the namespace: pycomms.<ns>.<kind>.<name> (the names here need no escaping). */
const subject = (kind, name) => `pycomms.${nsToken(NS)}.${kind}.${name}`;

/** A structured-mode CloudEvent (the SDK fills specversion, id and time). */
function event(type, kind, data, extensions = {}) {
  return new CloudEvent({ type, source: SOURCE, kind, datacontenttype: "application/json", data, ...extensions });
}

function readEvent(payload) {
  if (payload.length > MAX_EVENT) throw new Error(`event of ${payload.length} bytes, over the ${MAX_EVENT} allowed`);
  return new CloudEvent(JSON.parse(Buffer.from(payload).toString("utf8")), true); // validated: PyComms sends a valid CloudEvent
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const show = (ce, more = {}) => print({ id: ce.id, type: ce.type, kind: ce.kind, data: ce.data, ...more });

/** JetStream-publish `payload` (a string) with the two headers; resolves with the stream's ack. */
function put(js, to, payload, id) {
  const h = headers();
  h.set("Content-Type", "application/cloudevents+json");
  h.set("Nats-Msg-Id", id);
  return js.publish(to, Buffer.from(payload, "utf8"), { headers: h });
}

async function publish(js, count) {
  const to = subject("e", "interop.order_placed");
  const acks = [];
  for (let n = 0; n < count; n++) {
    const ce = event("interop.order_placed", "event", { order_id: n, total: n + 0.5 }, { traceparent: TRACEPARENT });
    acks.push(put(js, to, ce.toString(), ce.id));
  }
  const stored = await Promise.all(acks);
  print({ published: count, stored: stored.filter((ack) => !ack.duplicate).length });
}

async function send(js, orderId) {
  const ce = event("interop.ship", "command", { order_id: orderId, carrier: "post" });
  await put(js, subject("c", ce.type), ce.toString(), ce.id);
  print({ sent: orderId });
}

async function request(nc, js, sku, qty, timeoutMs = 20000) {
  const replyTo = randomBytes(8).toString("hex");
  const sub = nc.subscribe(subject("r", replyTo));
  await nc.flush(); // the subscription is on the server before the request can be answered
  const ask = event("interop.get_quote", "request", { sku, qty }, { replyto: replyTo });
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  await put(js, subject("c", ask.type), ask.toString(), ask.id);
  try {
    for await (const m of sub) {
      const reply = readEvent(m.data);
      if (reply.kind === "reply" && reply.causationid === ask.id) {
        show(reply, { pycommserror: reply.pycommserror ?? null, causationid: ask.id });
        return 0;
      }
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  process.stderr.write(`no reply to request ${ask.id} within ${timeoutMs} ms\n`);
  return 1;
}

async function bad(js) {
  const to = subject("e", "interop.order_placed");
  const good = { order_id: 1000, total: 1.0 };
  const invalid = event("interop.order_placed", "event", { order_id: "not a number", total: 1.0 });
  const samples = [
    ["not json", "this is not json", `bad-json-${randomBytes(6).toString("hex")}`],
    [
      "numeric time",
      JSON.stringify({
        specversion: "1.0", id: "bad-time", source: SOURCE, type: "interop.order_placed", kind: "event",
        time: 1721400000.25, data: good,
      }),
      "bad-time",
    ],
    ["invalid data", invalid.toString(), invalid.id],
  ];
  for (const [what, raw, id] of samples) {
    await put(js, to, raw, id);
    print({ bad: what });
  }
  const ok = event("interop.order_placed", "event", good);
  await put(js, to, ok.toString(), ok.id);
  print({ published: 1 });
}

/** The events stream of the namespace: PYCOMMS_<ns>_EVENTS. */
const eventsStream = () => `PYCOMMS_${nsToken(NS)}_EVENTS`;

async function subscribe(nc, js, group, count) {
  const jsm = await nc.jetstreamManager();
  // the same configuration again is accepted: a second run resumes the consumer
  await jsm.consumers.add(eventsStream(), {
    durable_name: group,
    filter_subject: subject("e", NOTICE),
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(30000),
    max_deliver: -1,
  });
  print({ ready: true });
  const consumer = await js.consumers.get(eventsStream(), group);
  const messages = await consumer.consume({ max_messages: Math.min(count, 16) }); // pull no more than it will ack
  let seen = 0;
  for await (const m of messages) {
    show(readEvent(m.data), { seq: m.seq });
    await m.ackAck(); // acknowledged once handled, and the server said so
    seen += 1;
    if (seen === count) break;
  }
  messages.stop();
}

async function unsubscribe(nc, group) {
  const jsm = await nc.jetstreamManager();
  print({ deleted: await jsm.consumers.delete(eventsStream(), group) });
}

async function observe(nc, count) {
  const sub = nc.subscribe(subject("e", NOTICE), { max: count });
  await nc.flush();
  print({ ready: true });
  for await (const m of sub) show(readEvent(m.data));
}

async function main() {
  const [action, ...args] = process.argv.slice(2);
  const actions = ["publish", "send", "request", "bad", "subscribe", "unsubscribe", "observe"];
  if (!actions.includes(action)) {
    process.stderr.write(`unknown action ${JSON.stringify(action)}; expected one of ${actions.join(", ")}\n`);
    return 2;
  }
  const nc = await connect({ servers: process.env.INTEROP_URL ?? "nats://127.0.0.1:4222" });
  const js = nc.jetstream();
  try {
    switch (action) {
      case "publish": await publish(js, Number(args[0])); return 0;
      case "send": await send(js, Number(args[0])); return 0;
      case "request": return await request(nc, js, args[0], Number(args[1]));
      case "bad": await bad(js); return 0;
      case "subscribe": await subscribe(nc, js, args[0], Number(args[1])); return 0;
      case "unsubscribe": await unsubscribe(nc, args[0]); return 0;
      case "observe": await observe(nc, Number(args[0])); return 0;
    }
  } finally {
    await nc.drain();
  }
}

process.exitCode = await main();
