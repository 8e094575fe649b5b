// A Node.js program that talks to a PyComms worker through its tables on PostgreSQL (the
// `pg` driver) or MariaDB/MySQL (`mysql2`), with the CloudEvents SDK (npm `cloudevents`,
// structured mode). Written from docs/interop/sql.md alone; it does not need PyComms.
//
//   INTEROP_URL=postgresql://postgres@127.0.0.1:5432/test INTEROP_NAMESPACE=ns node sql.mjs ACTION ARGS...
//   INTEROP_URL=mysql://root@127.0.0.1:3306/test INTEROP_NAMESPACE=ns node sql.mjs ACTION ARGS...
//
// Actions (each prints JSON lines on stdout):
//   publish COUNT            COUNT interop.order_placed events (order_id 0..COUNT-1)
//   send ORDER_ID CARRIER    one interop.ship command
//   request SKU QTY          one interop.get_quote request; prints its reply
//   bad                      an event whose data does not fit, and one with a numeric time
//   announce COUNT TEXT      the interop.announce command (the worker publishes COUNT notices)
//   subscribe SERVICE        durable subscriber SERVICE of interop.notice (kept after exit)
//   consume SERVICE COUNT    take COUNT notices from SERVICE's queue, ack each
//   unsubscribe SERVICE      remove SERVICE: subscription, messages, dead letters
//   observe COUNT TEXT       a passing observer: join, announce, take COUNT notices, leave

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { CloudEvent, HTTP } from "cloudevents";
import mysql from "mysql2/promise";
import pg from "pg";

const SOURCE = "/interop/node-sql";
const DEADLINE_MS = 30_000;

const url = process.env.INTEROP_URL;
const namespace = process.env.INTEROP_NAMESPACE;
const engine = url?.startsWith("postgres") ? "postgresql" : url?.match(/^(mysql|mariadb):/) ? "mysql" : null;
if (!engine || !namespace) {
  console.error("set INTEROP_URL=postgresql://... or mysql://... and INTEROP_NAMESPACE");
  process.exit(2);
}

// One connection; SQL written with $1, $2... (PostgreSQL) is sent with ? to MariaDB.
// query() returns the rows.
async function openDb() {
  if (engine === "postgresql") {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    return { query: async (sql, params = []) => (await client.query(sql, params)).rows, end: () => client.end() };
  }
  const conn = await mysql.createConnection(url.replace(/^mariadb:/, "mysql:"));
  await conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"); // no gap locks: they deadlock inserts against claims
  return {
    query: async (sql, params = []) => {
      const order = [...sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1]) - 1);
      const [rows] = await conn.query(sql.replace(/\$\d+/g, "?"), order.map((i) => params[i]));
      return Array.isArray(rows) ? rows : [];
    },
    end: () => conn.end(),
  };
}

// The tables of the namespace: pycomms_<namespace>_<table>.
const p = `pycomms_${namespace}`;
const T = {
  messages: `${p}_messages`,
  subscriptions: `${p}_subscriptions`,
  routes: `${p}_routes`,
  replies: `${p}_replies`,
  deadLetters: `${p}_dead_letters`,
  nodes: `${p}_nodes`,
  meta: `${p}_meta`,
};
const channel = p; // LISTEN channel: payload = a queue written to, or "#" + node id for a reply

function newEvent(type, kind, data, extensions = {}) {
  return new CloudEvent({
    id: randomUUID().replaceAll("-", ""),
    source: SOURCE,
    type,
    time: new Date().toISOString(),
    datacontenttype: "application/json",
    kind,
    ...extensions,
    data,
  });
}

// Structured mode: the event is one JSON document (application/cloudevents+json).
const encode = (event) => Buffer.from(JSON.stringify(event), "utf8");
const decode = (bytes) =>
  HTTP.toEvent({ headers: { "content-type": "application/cloudevents+json" }, body: bytes.toString("utf8") });

const now = () => Date.now() / 1000; // UNIX seconds, a double

// An event: one row per service subscribed to its type.
// PostgreSQL needs the casts: the parameters sit in a SELECT list.
const insertEvent =
  engine === "postgresql"
    ? `INSERT INTO ${T.messages} (queue, msg_id, data, attempt, available_at, created_at)
       SELECT service, $1::varchar, $2::bytea, 1, $3::double precision, $3::double precision
       FROM ${T.subscriptions} WHERE type = $4 AND kind = 'event'`
    : `INSERT INTO ${T.messages} (queue, msg_id, data, attempt, available_at, created_at)
       SELECT service, $1, $2, 1, $3, $3 FROM ${T.subscriptions} WHERE type = $4 AND kind = 'event'`;

async function publish(db, event) {
  await db.query(insertEvent, [event.id, encode(event), now(), event.type]);
}

// A command or request: one row in the queue of its routed service, or "@<type>" until one starts.
async function send(db, event) {
  const t = now();
  await db.query(
    `INSERT INTO ${T.messages} (queue, msg_id, data, attempt, available_at, created_at)
     VALUES (COALESCE((SELECT service FROM ${T.routes} WHERE type = $1), ${engine === "postgresql" ? "'@' || $1::varchar" : "CONCAT('@', $1)"}), $2, $3, 1, $4, $4)`,
    [event.type, event.id, encode(event), t],
  );
}

async function request(db, sku, qty) {
  const me = `js-${randomBytes(8).toString("hex")}`;
  let wake = () => {};
  let notified = false; // a NOTIFY that came while we were reading: do not wait for it
  let listener = null;
  if (engine === "postgresql") { // woken by NOTIFY "#<me>"; MariaDB: a poll every 20 ms
    listener = new pg.Client({ connectionString: url });
    await listener.connect();
    listener.on("notification", (n) => {
      if (n.payload === `#${me}`) {
        notified = true;
        wake();
      }
    });
    await listener.query(`LISTEN "${channel}"`);
  }
  try {
    const ask = newEvent("interop.get_quote", "request", { sku, qty }, { replyto: me });
    await send(db, ask);
    const deadline = Date.now() + DEADLINE_MS;
    while (Date.now() < deadline) {
      notified = false;
      const rows = await takeReplies(db, me);
      for (const row of rows) {
        const reply = decode(row.data);
        if (reply.causationid === ask.id) {
          return { type: reply.type, kind: reply.kind, data: reply.data, pycommserror: reply.pycommserror ?? null };
        }
      }
      if (notified) continue;
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, listener ? 500 : 20); // with LISTEN, a safety net
      });
    }
    throw new Error(`no reply to request ${ask.id} within ${DEADLINE_MS} ms`);
  } finally {
    await listener?.end();
  }
}

// Take (and delete) the replies stored for node `me`, oldest first.
async function takeReplies(db, me) {
  if (engine === "postgresql") {
    const rows = await db.query(`DELETE FROM ${T.replies} WHERE node = $1 RETURNING id, data`, [me]);
    return rows.sort((a, b) => Number(a.id) - Number(b.id));
  }
  const rows = await db.query(`SELECT id, data FROM ${T.replies} WHERE node = $1 ORDER BY id`, [me]);
  if (rows.length) await db.query(`DELETE FROM ${T.replies} WHERE id IN (${rows.map((r) => Number(r.id)).join(", ")})`);
  return rows;
}

async function bad(db) {
  await publish(db, newEvent("interop.order_placed", "event", { order_id: "not a number", total: 1 }));
  // Hand-written (the SDK would refuse it): a numeric time is not RFC 3339.
  const id = randomUUID().replaceAll("-", "");
  const raw = { specversion: "1.0", id, source: SOURCE, type: "interop.order_placed", kind: "event", time: 1721400000.25, data: { order_id: 1, total: 1 } };
  await db.query(insertEvent, [id, Buffer.from(JSON.stringify(raw)), now(), raw.type]);
}

async function subscribe(db, service) {
  const ignore = engine === "postgresql" ? ["INSERT", "ON CONFLICT DO NOTHING"] : ["INSERT IGNORE", ""];
  await db.query(`${ignore[0]} INTO ${T.subscriptions} (type, service, kind) VALUES ('interop.notice', $1, 'event') ${ignore[1]}`, [service]);
}

// Lease up to 50 rows of the queue for 30 s; a row leased before (its lease expired) is a new attempt.
async function claim(db, service, token) {
  const t = now();
  if (engine === "mysql") return claimMysql(db, service, token, t);
  const rows = await db.query(
    `WITH picked AS (
       SELECT id FROM ${T.messages} WHERE queue = $1 AND available_at <= $2
       ORDER BY available_at, id LIMIT 50 FOR UPDATE SKIP LOCKED)
     UPDATE ${T.messages} m
     SET attempt = m.attempt + CASE WHEN m.lease_token IS NULL THEN 0 ELSE 1 END,
         lease_token = $3, available_at = $4
     FROM picked WHERE m.id = picked.id
     RETURNING m.id, m.data, m.attempt`,
    [service, t, token, t + 30],
  );
  return rows.sort((a, b) => Number(a.id) - Number(b.id));
}

// MariaDB has no UPDATE ... RETURNING: lock with SKIP LOCKED, then lease, in one transaction.
async function claimMysql(db, service, token, t) {
  await db.query("BEGIN");
  try {
    const rows = await db.query(
      `SELECT id, data, attempt, lease_token FROM ${T.messages} WHERE queue = $1 AND available_at <= $2
       ORDER BY available_at, id LIMIT 50 FOR UPDATE SKIP LOCKED`,
      [service, t],
    );
    if (rows.length) {
      await db.query(
        `UPDATE ${T.messages} SET attempt = attempt + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END,
         lease_token = $1, available_at = $2 WHERE id IN (${rows.map((r) => Number(r.id)).join(", ")})`,
        [token, t + 30],
      );
    }
    await db.query("COMMIT");
    return rows.map((r) => ({ id: r.id, data: r.data, attempt: r.attempt + (r.lease_token === null ? 0 : 1) }));
  } catch (err) {
    await db.query("ROLLBACK");
    if (err.errno === 1213) return []; // InnoDB chose this claim as a deadlock victim: poll again
    throw err;
  }
}

async function consume(db, service, count, keepalive) {
  const token = randomBytes(16).toString("hex");
  const deadline = Date.now() + DEADLINE_MS;
  let got = 0;
  while (got < count) {
    if (Date.now() > deadline) throw new Error(`got ${got} of ${count} notices within ${DEADLINE_MS} ms`);
    if (keepalive) await keepalive();
    const rows = await claim(db, service, token);
    for (const row of rows) {
      const event = decode(row.data);
      console.log(JSON.stringify({ type: event.type, kind: event.kind, attempt: row.attempt, data: event.data }));
      await db.query(`DELETE FROM ${T.messages} WHERE id = $1 AND lease_token = $2`, [row.id, token]); // ack
      got += 1;
    }
    if (rows.length === 0) await sleep(20);
  }
}

async function unsubscribe(db, service) {
  await db.query(`DELETE FROM ${T.subscriptions} WHERE service = $1`, [service]);
  await db.query(`DELETE FROM ${T.messages} WHERE queue = $1`, [service]);
  await db.query(`DELETE FROM ${T.deadLetters} WHERE service = $1`, [service]);
}

async function observe(db, count, text) {
  const node = `js-${randomBytes(8).toString("hex")}`;
  const service = `observer-${node}`;
  const key = "observer:" + createHash("sha256").update(service).digest("hex").slice(0, 40);
  const info = { id: node, name: "node-observer", services: [], handles: ["interop.notice"], host: hostname(), pid: process.pid, started_at: now() };
  const t = now();
  await db.query(`INSERT INTO ${T.nodes} (id, info, last_seen, expires_at) VALUES ($1, $2, $3, $4)`, [node, JSON.stringify(info), t, t + 10]);
  await db.query(`INSERT INTO ${T.meta} (name, value) VALUES ($1, $2)`, [key, JSON.stringify({ service, node })]);
  const beat = async () => {
    const b = now();
    await db.query(`UPDATE ${T.nodes} SET last_seen = $1, expires_at = $2 WHERE id = $3`, [b, b + 10, node]);
  };
  try {
    await subscribe(db, service);
    await send(db, newEvent("interop.announce", "command", { count, text }));
    await consume(db, service, count, beat);
  } finally {
    await unsubscribe(db, service);
    await db.query(`DELETE FROM ${T.meta} WHERE name = $1`, [key]);
    await db.query(`DELETE FROM ${T.nodes} WHERE id = $1`, [node]);
  }
}

const [action, ...args] = process.argv.slice(2);
const db = await openDb();
try {
  switch (action) {
    case "publish":
      // One transaction for the burst: one commit (one disk flush) instead of one per event.
      await db.query("BEGIN");
      for (let n = 0; n < Number(args[0]); n++) {
        await publish(db, newEvent("interop.order_placed", "event", { order_id: n, total: n + 0.5 }));
      }
      await db.query("COMMIT");
      console.log(JSON.stringify({ published: Number(args[0]) }));
      break;
    case "send":
      await send(db, newEvent("interop.ship", "command", { order_id: Number(args[0]), carrier: args[1] }));
      console.log(JSON.stringify({ sent: 1 }));
      break;
    case "request":
      console.log(JSON.stringify(await request(db, args[0], Number(args[1]))));
      break;
    case "bad":
      await bad(db);
      console.log(JSON.stringify({ bad: 2 }));
      break;
    case "announce":
      await send(db, newEvent("interop.announce", "command", { count: Number(args[0]), text: args[1] }));
      console.log(JSON.stringify({ sent: 1 }));
      break;
    case "subscribe":
      await subscribe(db, args[0]);
      console.log(JSON.stringify({ subscribed: args[0] }));
      break;
    case "consume":
      await consume(db, args[0], Number(args[1]));
      break;
    case "unsubscribe":
      await unsubscribe(db, args[0]);
      console.log(JSON.stringify({ unsubscribed: args[0] }));
      break;
    case "observe":
      await observe(db, Number(args[0]), args[1]);
      break;
    default:
      console.error(`unknown action ${action}; see the top of this file`);
      process.exitCode = 2;
  }
} finally {
  await db.end();
}
