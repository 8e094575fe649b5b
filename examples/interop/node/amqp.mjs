// A Node.js program that talks to PyComms workers on RabbitMQ: amqplib and the
// CloudEvents SDK (npm `cloudevents`) only, written from docs/interop/amqp.md.
//
//   INTEROP_URL=amqp://guest:guest@127.0.0.1:5672/ INTEROP_NAMESPACE=shop \
//     INTEROP_QUEUE_TYPE=classic node amqp.mjs ACTION ...
//
// INTEROP_QUEUE_TYPE is the worker's queue_type (classic or quorum).
// Actions (the message types are those of tests/interop/interop_worker.py):
//   publish N              publish N interop.order_placed events (order_id 0..N-1)
//   binary                 publish two events in binary mode (order_id 2000, 2001) and one
//                          without its kind
//   send ORDER_ID          send an interop.ship command
//   request SKU QTY        ask interop.get_quote and print the reply
//   bad                    publish three bad events, then a good one (order_id 1000)
//   subscribe NAME COUNT   durable subscriber NAME of interop.notice: read COUNT events
//   unsubscribe NAME       delete the durable subscriber NAME's queue
//   observe COUNT          passing observer of interop.notice: read COUNT events
//
// It prints one JSON object a line for what it received, and {"ready": true} once a
// consumer's subscription is in place.

import { randomBytes } from "node:crypto";
import amqp from "amqplib";
import { CloudEvent, HTTP } from "cloudevents";

const SOURCE = "/interop/node-amqp";
const NOTICE = "interop.notice";
const STRUCTURED = "application/cloudevents+json";
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const MAX_EVENT = 1024 * 1024; // the worker's default max_message_size: refuse bigger input before parsing
const N = `pycomms.${process.env.INTEROP_NAMESPACE ?? "default"}`;
const QUEUE_TYPE = process.env.INTEROP_QUEUE_TYPE ?? "classic";

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const show = (ce, more = {}) => print({ id: ce.id, type: ce.type, kind: ce.kind, data: ce.data, ...more });

/** A CloudEvent (the SDK fills specversion, id and time). */
function event(type, kind, data, extensions = {}) {
  return new CloudEvent({ type, source: SOURCE, kind, datacontenttype: "application/json", data, ...extensions });
}

/** Publish options of a structured-mode event: persistent, labelled as a whole CloudEvent. */
const structured = (ce) => ({ contentType: STRUCTURED, deliveryMode: 2, messageId: ce.id, type: ce.type });

function readEvent(body) {
  if (body.length > MAX_EVENT) throw new Error(`event of ${body.length} bytes, over the ${MAX_EVENT} allowed`);
  return new CloudEvent(JSON.parse(body.toString("utf8")), false);
}

/** Publish and wait for the broker's confirm. */
function publishConfirmed(ch, exchange, routingKey, body, options) {
  return new Promise((resolve, reject) => {
    ch.publish(exchange, routingKey, body, options, (err) => (err ? reject(err) : resolve()));
  });
}

async function eventsExchange(ch) {
  await ch.assertExchange(`${N}.events`, "topic", { durable: true, autoDelete: false, internal: false });
  return `${N}.events`;
}

/** Record `queue` in the namespace's registry, so that a namespace drop removes it. */
async function record(ch, queue) {
  const registry = `${N}.registry`;
  await ch.assertQueue(registry, { durable: true, arguments: { "x-queue-type": "classic" } });
  const body = Buffer.from(JSON.stringify({ queues: [queue] }));
  await publishConfirmed(ch, "", registry, body, { contentType: "application/json", deliveryMode: 2 });
}

async function commandQueue(ch, type) {
  const queue = `${N}.cmd.${type}`;
  await record(ch, queue);
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-queue-type": QUEUE_TYPE } });
  return queue;
}

async function publish(ch, count) {
  const exchange = await eventsExchange(ch);
  const sends = [];
  for (let n = 0; n < count; n++) {
    const ce = event("interop.order_placed", "event", { order_id: n, total: n + 0.5 }, { traceparent: TRACEPARENT });
    sends.push(publishConfirmed(ch, exchange, "interop.order_placed", Buffer.from(ce.toString()), structured(ce)));
  }
  await Promise.all(sends);
  print({ published: count });
}

async function binary(ch) {
  const exchange = await eventsExchange(ch);
  for (const n of [2000, 2001, 2002]) {
    // The SDK's binary-mode message gives the ce- attributes as headers and the data as body
    const { headers, body } = HTTP.binary(event("interop.order_placed", "event", { order_id: n, total: 1.0 }));
    const { "content-type": contentType, ...attributes } = headers;
    if (n === 2002) delete attributes["ce-kind"]; // bad input: no kind
    const data = Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    await publishConfirmed(ch, exchange, "interop.order_placed", data, { headers: attributes, contentType, deliveryMode: 2 });
  }
  print({ published: 3 });
}

async function send(ch, orderId) {
  const queue = await commandQueue(ch, "interop.ship");
  const ce = event("interop.ship", "command", { order_id: orderId, carrier: "post" });
  await publishConfirmed(ch, "", queue, Buffer.from(ce.toString()), structured(ce));
  print({ sent: orderId });
}

async function request(ch, sku, qty, timeoutMs = 20000) {
  const replyTo = randomBytes(8).toString("hex");
  await ch.assertExchange(`${N}.replies`, "direct", { durable: true, autoDelete: false, internal: false });
  const { queue: inbox } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false });
  await ch.bindQueue(inbox, `${N}.replies`, replyTo);
  const queue = await commandQueue(ch, "interop.get_quote");
  const ask = event("interop.get_quote", "request", { sku, qty }, { replyto: replyTo });
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.stderr.write(`no reply to request ${ask.id} within ${timeoutMs} ms\n`);
      resolve(1);
    }, timeoutMs);
    ch.consume(inbox, (msg) => {
      if (msg === null) return;
      const reply = readEvent(msg.content);
      if (reply.kind === "reply" && reply.causationid === ask.id) {
        clearTimeout(timer);
        show(reply, { pycommserror: reply.pycommserror ?? null, causationid: ask.id });
        resolve(0);
      }
    }, { noAck: true })
      .then(() => publishConfirmed(ch, "", queue, Buffer.from(ask.toString()), structured(ask)))
      .catch(reject);
  });
}

async function bad(ch) {
  const exchange = await eventsExchange(ch);
  const good = { order_id: 1000, total: 1.0 };
  const samples = {
    "not json": "this is not json",
    "numeric time": JSON.stringify({
      specversion: "1.0", id: "bad-time", source: SOURCE, type: "interop.order_placed", kind: "event",
      time: 1721400000.25, data: good,
    }),
    "invalid data": event("interop.order_placed", "event", { order_id: "nan", total: 1.0 }).toString(),
  };
  for (const [what, raw] of Object.entries(samples)) {
    await publishConfirmed(ch, exchange, "interop.order_placed", Buffer.from(raw), { contentType: STRUCTURED, deliveryMode: 2 });
    print({ bad: what });
  }
  const ce = event("interop.order_placed", "event", good);
  await publishConfirmed(ch, exchange, "interop.order_placed", Buffer.from(ce.toString()), structured(ce));
  print({ published: 1 });
}

/** Consume `queue` until `count` events came; acks each one if `ack`. */
async function consume(ch, queue, count, ack) {
  let seen = 0;
  await new Promise((resolve, reject) => {
    ch.consume(queue, (msg) => {
      if (msg === null || seen >= count) return;
      show(readEvent(msg.content), { redelivered: msg.fields.redelivered });
      if (ack) ch.ack(msg);
      seen += 1;
      if (seen === count) resolve();
    }, { noAck: !ack })
      .then(() => print({ ready: true }))
      .catch(reject);
  });
}

async function subscribe(ch, name, count) {
  const queue = `${N}.sub.${name}`;
  await record(ch, queue);
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-queue-type": "classic" } });
  await ch.bindQueue(queue, await eventsExchange(ch), NOTICE);
  await ch.prefetch(count);
  await consume(ch, queue, count, true);
}

async function unsubscribe(ch, name) {
  await ch.deleteQueue(`${N}.sub.${name}`);
  print({ deleted: `${N}.sub.${name}` });
}

async function observe(ch, count) {
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false });
  await ch.bindQueue(queue, await eventsExchange(ch), NOTICE);
  await consume(ch, queue, count, false);
}

async function main() {
  const [action, ...args] = process.argv.slice(2);
  const connection = await amqp.connect(process.env.INTEROP_URL ?? "amqp://guest:guest@127.0.0.1:5672/");
  const ch = await connection.createConfirmChannel();
  try {
    switch (action) {
      case "publish": await publish(ch, Number(args[0])); return 0;
      case "binary": await binary(ch); return 0;
      case "send": await send(ch, Number(args[0])); return 0;
      case "request": return await request(ch, args[0], Number(args[1]));
      case "bad": await bad(ch); return 0;
      case "subscribe": await subscribe(ch, args[0], Number(args[1])); return 0;
      case "unsubscribe": await unsubscribe(ch, args[0]); return 0;
      case "observe": await observe(ch, Number(args[0])); return 0;
      default:
        process.stderr.write(`unknown action ${JSON.stringify(action)}; expected publish, binary, send, request, bad, subscribe, unsubscribe or observe\n`);
        return 2;
    }
  } finally {
    await ch.close(); // the channel first: its acks are sent before it closes
    await connection.close();
  }
}

process.exitCode = await main();
