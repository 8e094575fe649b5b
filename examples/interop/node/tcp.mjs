// A Node.js program that joins a PyComms tcp:// cluster as a peer: node's `net` for the
// frames of docs/tcp-protocol.md, the CloudEvents SDK (npm `cloudevents`, structured
// mode) for the envelopes. Written from docs/interop/tcp.md alone; it does not need
// PyComms. It listens nowhere: its STATE is the minimal one, so nobody dials it back.
//
//   INTEROP_URL=tcp:// INTEROP_NAMESPACE=ns node tcp.mjs ACTION ARGS...
//
// tcp:// finds the nodes in the same-host registry directory of the namespace
// ($XDG_RUNTIME_DIR/pycomms/NS/nodes/*.json, else /tmp/pycomms-UID/NS/nodes/);
// tcp://HOST:PORT dials that node. Actions (JSON lines on stdout):
//   publish COUNT            COUNT interop.order_placed events (order_id 0..COUNT-1)
//   send ORDER_ID CARRIER    one interop.ship command
//   request SKU QTY          one interop.get_quote request; prints its reply
//   bad                      an event whose data does not fit, and one with a numeric time
//   announce COUNT TEXT      the interop.announce command (the worker publishes COUNT notices)
//   subscribe SERVICE        make SERVICE (interop.notice) known to the cluster, then leave
//   consume SERVICE COUNT    run SERVICE until COUNT notices were handled, then leave
//   unsubscribe SERVICE      retire SERVICE for good: the node forgets it and what it kept for it
//   observe COUNT TEXT       a passing observer: join, announce, take COUNT notices, leave

import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CloudEvent, HTTP } from "cloudevents";

const SOURCE = "/interop/node-tcp";
const PROTO = 2;
const F = { HELLO: 1, AUTH: 2, STATE: 3, PING: 4, DELIVER: 5, ACK: 6, RELEASE: 7, REPLY: 8, SUBSCRIBE: 9, SUBSCRIBED: 10, UNSUBSCRIBE: 11, RPC: 12, RPC_RESULT: 13, BYE: 14, ERROR: 15 };
const MAX_FRAME = 65_536 + 1_048_576; // the node's max_message_size (1 MiB) + 64 KiB
const DEADLINE_MS = 30_000;

const url = new URL(process.env.INTEROP_URL ?? "tcp://");
const namespace = process.env.INTEROP_NAMESPACE;
if (!namespace) {
  console.error("set INTEROP_URL=tcp:// (or tcp://HOST:PORT) and INTEROP_NAMESPACE");
  process.exit(2);
}

function registryNodes() {
  const base = process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, "pycomms") : join(tmpdir(), `pycomms-${process.getuid()}`);
  const dir = join(base, namespace, "nodes");
  const found = [];
  let names = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(".json") && !n.startsWith(".")).sort();
  } catch {
    return found;
  }
  for (const name of names) {
    const entry = JSON.parse(readFileSync(join(dir, name), "utf8"));
    try {
      process.kill(entry.pid, 0); // a file whose pid is gone is stale
    } catch (err) {
      if (err.code === "ESRCH") continue;
    }
    found.push([entry.host, entry.port]);
  }
  return found;
}

const withDeadline = (promise, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${DEADLINE_MS} ms`)), DEADLINE_MS).unref())]);

class Peer {
  constructor() {
    this.id = `js-${randomBytes(8).toString("hex")}`;
    this.services = new Map(); // the services the node runs now -> {events: Set, commands: Set}
    this.acks = new Map(); // seq -> {resolve, reject, service, data}
    this.subscribed = new Map();
    this.replies = [];
    this.deliveries = [];
    this.waiters = [];
    this.seq = 0n;
    this.buffer = Buffer.alloc(0);
    this.frames = [];
  }

  send(kind, payload = Buffer.alloc(0)) {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(payload.length + 1, 0);
    head.writeUInt8(kind, 4);
    this.socket.write(Buffer.concat([head, payload]));
  }

  sendJson(kind, body) {
    this.send(kind, Buffer.from(JSON.stringify(body), "utf8"));
  }

  // Frames as they complete: u32 length (type + payload), u8 type, payload.
  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 5) {
      const length = this.buffer.readUInt32BE(0);
      if (length < 1 || length > MAX_FRAME) return this.fail(new Error(`frame length ${length} is out of bounds`));
      if (this.buffer.length < 4 + length) break;
      const kind = this.buffer.readUInt8(4);
      const payload = this.buffer.subarray(5, 4 + length);
      this.buffer = this.buffer.subarray(4 + length);
      this.frame(kind, payload);
    }
  }

  nextFrame() {
    return new Promise((resolve) => this.frames.push(resolve));
  }

  async connect(host, port) {
    this.socket = connect({ host, port });
    this.socket.on("data", (chunk) => this.onData(chunk));
    this.socket.on("error", (err) => this.fail(err));
    this.socket.on("close", () => this.fail(new Error("the node closed the link")));
    await new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    const nonce = randomBytes(16).toString("hex");
    this.sendJson(F.HELLO, { proto: PROTO, namespace, id: this.id, nonce, mac: "" }); // no secret: mac ""
    let [kind, payload] = await withDeadline(this.nextFrame(), "HELLO");
    const hello = JSON.parse(payload);
    if (kind !== F.HELLO) throw new Error(`refused: ${hello.error}`);
    if (hello.mac) throw new Error("the node requires a secret");
    this.sendJson(F.AUTH, { mac: "" });
    this.sendJson(F.STATE, {}); // minimal: no address (never dialled), no services, no peers
    [kind, payload] = await withDeadline(this.nextFrame(), "STATE");
    if (kind !== F.STATE) throw new Error(`expected STATE, got frame ${kind}`);
    const state = JSON.parse(payload);
    for (const [service, [events, commands]] of Object.entries(state.live ?? {})) {
      this.services.set(service, { events: new Set(events), commands: new Set(commands) });
    }
    this.open = true;
    // The node cuts a link silent for 3 heartbeats (3 s by default).
    this.pinger = setInterval(() => this.send(F.PING), 500);
  }

  frame(kind, payload) {
    if (!this.open) return this.frames.shift()?.([kind, payload]);
    if (kind === F.ACK) {
      for (let at = 0; at + 8 <= payload.length; at += 8) {
        const seq = payload.readBigUInt64BE(at);
        this.acks.get(seq)?.resolve();
        this.acks.delete(seq);
      }
    } else if (kind === F.RELEASE) { // the instance gave it back: again if the node still runs the service
      for (let at = 0; at + 12 <= payload.length; at += 12) {
        const seq = payload.readBigUInt64BE(at);
        const pending = this.acks.get(seq);
        if (!pending) continue;
        if (this.services.has(pending.service)) {
          this.send(F.DELIVER, deliverPayload(seq, payload.readUInt32BE(at + 8), pending.service, pending.data));
        } else {
          this.acks.delete(seq);
          pending.reject(new Error(`${pending.service} has no live instance on the node`));
        }
      }
    } else if (kind === F.REPLY) {
      this.push(this.replies, payload);
    } else if (kind === F.DELIVER) {
      const n = payload.readUInt16BE(12);
      this.push(this.deliveries, { seq: payload.readBigUInt64BE(0), attempt: payload.readUInt32BE(8), service: payload.subarray(14, 14 + n).toString("utf8"), data: payload.subarray(14 + n) });
    } else if (kind === F.SUBSCRIBED) {
      const { token } = JSON.parse(payload);
      this.subscribed.get(token)?.();
      this.subscribed.delete(token);
    } else if (kind === F.SUBSCRIBE) { // the node started an instance of a service
      const body = JSON.parse(payload);
      if (!body.ephemeral) this.services.set(body.service, { events: new Set(body.events), commands: new Set(body.commands) });
      this.sendJson(F.SUBSCRIBED, { token: body.token });
    } else if (kind === F.UNSUBSCRIBE) {
      this.services.delete(JSON.parse(payload).service);
    } else if (kind === F.RPC) { // dead-letter calls go to every peer: this client holds none
      const body = JSON.parse(payload);
      this.sendJson(F.RPC_RESULT, { id: body.id, ok: true, result: body.op === "dead_letters" ? [] : 0 });
    } else if (kind === F.BYE || kind === F.ERROR) {
      this.fail(new Error(`the node closed the link: frame ${kind} ${payload.toString("utf8").slice(0, 200)}`));
    } // PING; HANDOFF and DEAD_HANDOFF are never sent to a node that does not listen
  }

  push(queue, item) {
    queue.push(item);
    for (const wake of this.waiters.splice(0)) wake();
  }

  async take(queue, what) {
    const deadline = Date.now() + DEADLINE_MS;
    while (queue.length === 0) {
      if (this.failure) throw this.failure;
      if (Date.now() > deadline) throw new Error(`${what}: nothing within ${DEADLINE_MS} ms`);
      await new Promise((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200).unref();
      });
    }
    return queue.shift();
  }

  fail(err) {
    if (this.closing || this.failure) return;
    this.failure = err;
    for (const pending of this.acks.values()) pending.reject(err);
    this.acks.clear();
    for (const wake of this.waiters.splice(0)) wake();
    for (const wake of this.frames.splice(0)) wake([F.ERROR, Buffer.from(JSON.stringify({ error: String(err) }))]);
  }

  deliver(service, data) {
    this.seq += 1n;
    const seq = this.seq;
    const acked = new Promise((resolve, reject) => this.acks.set(seq, { resolve, reject, service, data }));
    this.send(F.DELIVER, deliverPayload(seq, 1, service, data));
    return acked;
  }

  // An event: every service handling its type; a command or request: the first by name;
  // among the services the node runs now (no spool here to keep a message for one that is down).
  route(type, kind) {
    const names = [...this.services.keys()].sort();
    const handles = (s) => (kind === "event" ? this.services.get(s).events : this.services.get(s).commands).has(type);
    const matching = names.filter(handles);
    return kind === "event" ? matching : matching.slice(0, 1);
  }

  async emit(event) {
    const services = this.route(event.type, event.kind);
    if (event.kind !== "event" && services.length === 0) throw new Error(`no service handles ${event.type}`);
    const data = Buffer.from(JSON.stringify(event), "utf8"); // structured mode
    await withDeadline(Promise.all(services.map((s) => this.deliver(s, data))), `ACK of ${event.type}`);
  }

  async runService(service, count, ephemeral, then) {
    const token = randomBytes(8).toString("hex");
    const done = new Promise((resolve) => this.subscribed.set(token, resolve));
    this.sendJson(F.SUBSCRIBE, { token, service, events: ["interop.notice"], commands: [], ephemeral });
    await withDeadline(done, "SUBSCRIBED");
    if (then) await then();
    for (let i = 0; i < count; i++) {
      const { seq, attempt, data } = await this.take(this.deliveries, "a notice");
      const event = decode(data);
      console.log(JSON.stringify({ type: event.type, kind: event.kind, attempt, data: event.data }));
      const ack = Buffer.alloc(8);
      ack.writeBigUInt64BE(seq);
      this.send(F.ACK, ack); // after handling it: settled
    }
    this.sendJson(F.UNSUBSCRIBE, { service });
  }

  async close() {
    clearInterval(this.pinger);
    this.closing = true;
    this.send(F.BYE);
    await new Promise((resolve) => this.socket.end(resolve));
  }
}

function deliverPayload(seq, attempt, service, data) {
  const name = Buffer.from(service, "utf8");
  const head = Buffer.alloc(14);
  head.writeBigUInt64BE(BigInt(seq), 0);
  head.writeUInt32BE(attempt, 8);
  head.writeUInt16BE(name.length, 12);
  return Buffer.concat([head, name, data]);
}

const decode = (bytes) => HTTP.toEvent({ headers: { "content-type": "application/cloudevents+json" }, body: bytes.toString("utf8") });

function newEvent(type, kind, data, extensions = {}) {
  return new CloudEvent({ id: randomUUID().replaceAll("-", ""), source: SOURCE, type, time: new Date().toISOString(), datacontenttype: "application/json", kind, ...extensions, data });
}

async function request(peer, sku, qty) {
  const ask = newEvent("interop.get_quote", "request", { sku, qty }, { replyto: peer.id });
  await peer.emit(ask);
  for (;;) {
    const reply = decode(await peer.take(peer.replies, `reply to ${ask.id}`));
    if (reply.causationid === ask.id) return { type: reply.type, kind: reply.kind, data: reply.data, pycommserror: reply.pycommserror ?? null };
  }
}

async function bad(peer) {
  await peer.emit(newEvent("interop.order_placed", "event", { order_id: "not a number", total: 1 }));
  // Hand-written (the SDK would refuse it): a numeric time is not RFC 3339.
  const raw = { specversion: "1.0", id: randomUUID().replaceAll("-", ""), source: SOURCE, type: "interop.order_placed", kind: "event", time: 1721400000.25, data: { order_id: 1, total: 1 } };
  const data = Buffer.from(JSON.stringify(raw), "utf8");
  await withDeadline(Promise.all(peer.route(raw.type, "event").map((s) => peer.deliver(s, data))), "ACK");
}

const [action, ...args] = process.argv.slice(2);
const peer = new Peer();
if (url.hostname) {
  await peer.connect(url.hostname, Number(url.port));
} else {
  const nodes = registryNodes();
  if (nodes.length === 0) throw new Error(`no live node of namespace ${namespace} in the same-host registry`);
  await peer.connect(...nodes[0]); // one link is enough: this client sends to the nodes it can reach
}
try {
  switch (action) {
    case "publish": { // all sent at once, then every ACK awaited
      const events = [...Array(Number(args[0])).keys()].map((n) => newEvent("interop.order_placed", "event", { order_id: n, total: n + 0.5 }));
      await Promise.all(events.map((e) => peer.emit(e)));
      console.log(JSON.stringify({ published: events.length }));
      break;
    }
    case "send":
      await peer.emit(newEvent("interop.ship", "command", { order_id: Number(args[0]), carrier: args[1] }));
      console.log(JSON.stringify({ sent: 1 }));
      break;
    case "request":
      console.log(JSON.stringify(await request(peer, args[0], Number(args[1]))));
      break;
    case "bad":
      await bad(peer);
      console.log(JSON.stringify({ bad: 2 }));
      break;
    case "announce":
      await peer.emit(newEvent("interop.announce", "command", { count: Number(args[0]), text: args[1] }));
      console.log(JSON.stringify({ sent: 1 }));
      break;
    case "subscribe":
      await peer.runService(args[0], 0, false);
      console.log(JSON.stringify({ subscribed: args[0] }));
      break;
    case "consume":
      await peer.runService(args[0], Number(args[1]), false);
      break;
    case "unsubscribe":
      peer.sendJson(F.UNSUBSCRIBE, { service: args[0], forget: true });
      console.log(JSON.stringify({ unsubscribed: args[0] }));
      break;
    case "observe":
      await peer.runService(`observer-${peer.id}`, Number(args[0]), true, () =>
        peer.emit(newEvent("interop.announce", "command", { count: Number(args[0]), text: args[1] })),
      );
      break;
    default:
      console.error(`unknown action ${action}; see the top of this file`);
      process.exitCode = 2;
  }
} finally {
  await peer.close();
}
