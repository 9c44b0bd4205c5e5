// Sends `count` records through @fluent-org/logger with the options given as
// one JSON argument, waits for every emit promise (with acks: every ack), and
// prints one JSON line with what was sent.
const fs = require("fs");
const { FluentClient, EventTime } = require("@fluent-org/logger");

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const clientOptions = {
    eventMode: opts.mode || "PackedForward",
    socket: { host: "127.0.0.1", port: opts.port, timeout: 10000, disableReconnect: false },
    flushInterval: opts.flushInterval || 0,
  };
  if (opts.ack) clientOptions.ack = { ackTimeout: 10000 };
  if (opts.sharedKey) {
    clientOptions.security = { clientHostname: opts.clientHostname || "node-client", sharedKey: opts.sharedKey };
    if (opts.username) {
      clientOptions.security.username = opts.username;
      clientOptions.security.password = opts.password;
    }
  }
  if (opts.caFile) clientOptions.tls = { ca: fs.readFileSync(opts.caFile), servername: "localhost" };
  if (opts.eventTime) clientOptions.milliseconds = true;
  const logger = new FluentClient(opts.tag, clientOptions);
  const sent = [];
  const promises = [];
  for (let i = 0; i < opts.count; i++) {
    const record = { seq: i, product_id: "sg.gem_pack_" + (i % 5), price: 0.99 + i, nested: { ok: true, list: [i, "x"] } };
    // A plain number is milliseconds to this client (as Date.now()).
    const time = opts.eventTime ? new EventTime(1700000000 + i, 123456789) : (1700000000 + i) * 1000;
    promises.push(logger.emit(opts.label || "purchase", record, time));
    sent.push(record);
  }
  await Promise.all(promises);
  await logger.disconnect();
  console.log(JSON.stringify({ sent: sent.length }));
  // Without acks the client keeps a reconnect timer alive after disconnect.
  process.exit(0);
}

main().catch((err) => {
  console.error("send.js failed:", err && err.stack ? err.stack : err);
  process.exit(1);
});
