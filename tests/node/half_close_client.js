// A Node TLS client that half-closes, for `aiotls serve --echo`: node half_close_client.js PORT CA NBYTES
// Connects to 127.0.0.1:PORT (servername localhost), sends NBYTES random bytes, ends its side
// (close_notify), reads until the server ends the connection, then prints one JSON line:
// {protocol, authorized, sent: {bytes, sha256}, received: {bytes, sha256}}.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const tls = require('tls');

const [port, caFile, nbytes] = process.argv.slice(2);
const payload = crypto.randomBytes(Number(nbytes));
const received = { bytes: 0, hash: crypto.createHash('sha256') };
let seen;

const socket = tls.connect({
  host: '127.0.0.1',
  port: Number(port),
  servername: 'localhost',
  ca: fs.readFileSync(caFile),
}, () => {
  seen = { protocol: socket.getProtocol(), authorized: socket.authorized };
  socket.end(payload);
});
socket.on('data', (chunk) => {
  received.bytes += chunk.length;
  received.hash.update(chunk);
});
socket.on('end', () => {
  console.log(JSON.stringify({
    ...seen,
    sent: { bytes: payload.length, sha256: crypto.createHash('sha256').update(payload).digest('hex') },
    received: { bytes: received.bytes, sha256: received.hash.digest('hex') },
  }));
});
socket.on('error', (err) => {
  console.error(`half_close_client: ${err.code || ''} ${err.message}`);
  process.exitCode = 1;
});
