// A Node.js program that talks to PyComms workers on MQTT 5: MQTT.js (npm `mqtt`) and the
// CloudEvents SDK (npm `cloudevents`) only, written from docs/interop/mqtt.md.
//
//   INTEROP_URL=mqtt://127.0.0.1:1883 INTEROP_NAMESPACE=shop node mqtt.mjs ACTION ...
//
// Actions (the message types are those of tests/interop/interop_worker.py):
//   publish N              publish N interop.order_placed events (order_id 0..N-1)
//   send ORDER_ID          send an interop.ship command
//   request SKU QTY        ask interop.get_quote (PyComms' way: `replyto`) and print the reply
//   request5 SKU QTY       the same with MQTT 5 request/response (Response Topic, Correlation Data)
//   bad                    publish three bad events, then a good one (order_id 1000)
//   subscribe GROUP COUNT  durable subscriber GROUP of interop.notice (a persistent session): read COUNT events
//   unsubscribe GROUP      end the durable subscriber GROUP's session
//   observe COUNT          passing observer of interop.notice: read COUNT events
//
// It prints one JSON object a line for what it received, and {"ready": true} once a
// consumer's subscription is in place. Every message is one structured-mode CloudEvent,
// QoS 1, MQTT 5 Content Type application/cloudevents+json.

import { randomBytes } from "node:crypto";
import { CloudEvent } from "cloudevents";
import mqtt from "mqtt";

const SOURCE = "/interop/node-mqtt";
const NOTICE = "interop.notice";
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CONTENT_TYPE = "application/cloudevents+json";
const NO_MATCHING_SUBSCRIBERS = 0x10;
const MAX_EVENT = 1024 * 1024; // the worker's default max_message_size: refuse bigger input before parsing
const NS = process.env.INTEROP_NAMESPACE ?? "default";

/** One topic level: `%`, `/`, `+`, `#` escaped as the page says. */
const level = (name) => name.replace(/[%/+#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`);
/** A topic of the namespace: pycomms/<NS>/<kind>/<names...>. */
const topic = (kind, ...names) => ["pycomms", level(NS), kind, ...names.map(level)].join("/");

/** A structured-mode CloudEvent (the SDK fills specversion, id and time). */
function event(type, kind, data, extensions = {}) {
  return new CloudEvent({ type, source: SOURCE, kind, datacontenttype: "application/json", data, ...extensions });
}

function readEvent(payload) {
  if (payload.length > MAX_EVENT) throw new Error(`event of ${payload.length} bytes, over the ${MAX_EVENT} allowed`);
  return new CloudEvent(JSON.parse(payload.toString("utf8")), true); // validated: PyComms sends a valid CloudEvent
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const show = (ce, more = {}) => print({ id: ce.id, type: ce.type, kind: ce.kind, data: ce.data, ...more });

/** PUBLISH QoS 1 with the structured-mode content type; resolves with the PUBACK. */
function put(client, to, payload, more = {}) {
  const { properties = {}, ...options } = more;
  return client.publishAsync(to, payload, { qos: 1, ...options, properties: { contentType: CONTENT_TYPE, ...properties } });
}

async function publish(client, count) {
  const to = topic("e", "interop.order_placed");
  const acks = [];
  for (let n = 0; n < count; n++) {
    const ce = event("interop.order_placed", "event", { order_id: n, total: n + 0.5 }, { traceparent: TRACEPARENT });
    acks.push(put(client, to, ce.toString()));
  }
  const done = await Promise.all(acks);
  print({ published: count, matched: done.filter((ack) => (ack?.reasonCode ?? 0) !== NO_MATCHING_SUBSCRIBERS).length });
}

async function send(client, orderId) {
  const ce = event("interop.ship", "command", { order_id: orderId, carrier: "post" });
  const ack = await put(client, topic("c", ce.type), ce.toString());
  if (ack?.reasonCode === NO_MATCHING_SUBSCRIBERS) {
    // no service has ever subscribed to the type: park it where the first one will look
    await put(client, topic("p", ce.type, ce.id), ce.toString(), { retain: true });
  }
  print({ sent: orderId });
}

/** Wait for the first message on `on` that `match` accepts (its CloudEvent), or time out. */
function firstReply(client, on, match, timeoutMs) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.off("message", handle);
      resolve(null);
    }, timeoutMs);
    function handle(got, payload, packet) {
      if (got !== on) return;
      const ce = readEvent(payload);
      if (!match(ce, packet)) return;
      clearTimeout(timer);
      client.off("message", handle);
      resolve(ce);
    }
    client.on("message", handle);
  });
}

async function request(client, sku, qty, mqtt5, timeoutMs = 20000) {
  const replyTo = randomBytes(8).toString("hex");
  const correlation = randomBytes(8);
  const extensions = mqtt5 ? {} : { replyto: replyTo };
  const ask = event("interop.get_quote", "request", { sku, qty }, extensions);
  const replies = mqtt5 ? `interop-node/${replyTo}/replies` : topic("r", replyTo);
  const match = mqtt5
    ? (ce, packet) => ce.kind === "reply" && Buffer.compare(packet.properties?.correlationData ?? Buffer.alloc(0), correlation) === 0
    : (ce) => ce.kind === "reply" && ce.causationid === ask.id;
  await client.subscribeAsync(replies, { qos: 1 });
  const waiting = firstReply(client, replies, match, timeoutMs);
  const properties = mqtt5 ? { responseTopic: replies, correlationData: correlation } : {};
  await put(client, topic("c", ask.type), ask.toString(), { properties });
  const reply = await waiting;
  await client.unsubscribeAsync(replies);
  if (reply === null) {
    process.stderr.write(`no reply to request ${ask.id} within ${timeoutMs} ms\n`);
    return 1;
  }
  show(reply, { pycommserror: reply.pycommserror ?? null, causationid: ask.id });
  return 0;
}

async function bad(client) {
  const to = topic("e", "interop.order_placed");
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
    await put(client, to, raw);
    print({ bad: what });
  }
  await put(client, to, event("interop.order_placed", "event", good).toString());
  print({ published: 1 });
}

/** Connected (MQTT 5); `handle(packet)` set before any message can arrive. */
function open(url, options, handle) {
  const client = mqtt.connect(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 10000, ...options });
  if (handle) client.handleMessage = handle;
  return new Promise((resolve, reject) => {
    client.once("connect", () => resolve(client));
    client.once("error", reject);
  });
}

/** The durable subscriber's client id: fixed, so its session is found again. */
const durableId = (group) => `interop-node-${NS}-${group}`;

async function subscribe(url, group, count) {
  const from = topic("e", NOTICE);
  let seen = 0;
  let finished;
  const done = new Promise((resolve) => (finished = resolve));
  // the PUBACK goes out only once `callback` is called: after handling; what comes
  // past COUNT is left unacknowledged, and comes back when the session is resumed
  const handle = (packet, callback) => {
    if (packet.topic !== from || seen === count) return;
    show(readEvent(packet.payload), { dup: packet.dup });
    seen += 1;
    callback();
    if (seen === count) finished();
  };
  const client = await open(url, { clientId: durableId(group), clean: false, properties: { sessionExpiryInterval: 86400 } }, handle);
  try {
    await client.subscribeAsync(`$share/${group}/${from}`, { qos: 1 });
    print({ ready: true });
    await done;
  } finally {
    await client.endAsync();
  }
}

async function unsubscribe(url, group) {
  const client = await open(url, { clientId: durableId(group), clean: true, properties: { sessionExpiryInterval: 0 } });
  await client.endAsync();
  print({ ended: group });
}

async function observe(client, count) {
  const from = topic("e", NOTICE);
  let seen = 0;
  const done = new Promise((resolve) => {
    client.on("message", (got, payload) => {
      if (got !== from || seen === count) return;
      show(readEvent(payload));
      seen += 1;
      if (seen === count) resolve();
    });
  });
  await client.subscribeAsync(from, { qos: 1 });
  print({ ready: true });
  await done;
}

async function main() {
  const [action, ...args] = process.argv.slice(2);
  const actions = ["publish", "send", "request", "request5", "bad", "subscribe", "unsubscribe", "observe"];
  if (!actions.includes(action)) {
    process.stderr.write(`unknown action ${JSON.stringify(action)}; expected one of ${actions.join(", ")}\n`);
    return 2;
  }
  const url = process.env.INTEROP_URL ?? "mqtt://127.0.0.1:1883";
  if (action === "subscribe") {
    await subscribe(url, args[0], Number(args[1]));
    return 0;
  }
  if (action === "unsubscribe") {
    await unsubscribe(url, args[0]);
    return 0;
  }
  // a passing client: Clean Start 1, Session Expiry 0, nothing kept for it on the broker
  const client = await mqtt.connectAsync(url, {
    protocolVersion: 5,
    clean: true,
    properties: { sessionExpiryInterval: 0 },
    reconnectPeriod: 0,
    connectTimeout: 10000,
  });
  try {
    switch (action) {
      case "publish": await publish(client, Number(args[0])); return 0;
      case "send": await send(client, Number(args[0])); return 0;
      case "request": return await request(client, args[0], Number(args[1]), false);
      case "request5": return await request(client, args[0], Number(args[1]), true);
      case "bad": await bad(client); return 0;
      case "observe": await observe(client, Number(args[0])); return 0;
    }
  } finally {
    await client.endAsync();
  }
}

process.exitCode = await main();
