// A Node TLS client for the interop tests: node client.js PORT CA VERSION NBYTES
// Connects to 127.0.0.1:PORT (servername localhost), sends NBYTES random bytes, reads
// until the server ends the connection, then prints one JSON line: {protocol, cipher,
// authorized, sent: {bytes, sha256}, received: {bytes, sha256}}.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const tls = require('tls');

const [port, caFile, version, nbytes] = process.argv.slice(2);
const payload = crypto.randomBytes(Number(nbytes));
const received = { bytes: 0, hash: crypto.createHash('sha256') };
let seen;

const socket = tls.connect({
  host: '127.0.0.1',
  port: Number(port),
  servername: 'localhost',
  ca: fs.readFileSync(caFile),
  minVersion: version,
  maxVersion: version,
}, () => {
  seen = {
    protocol: socket.getProtocol(),
    cipher: socket.getCipher(),
    authorized: socket.authorized,
  };
  socket.write(payload);
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
  console.error(`client: ${err.code || ''} ${err.message}`);
  process.exitCode = 1;
});
