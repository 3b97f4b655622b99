// A Node TLS echo server for the interop tests: node echo_server.js KEY CERT VERSION
// Listens on 127.0.0.1 at a free port and prints {"port"}; echoes its first connection,
// then prints what it saw of it, {protocol, cipher, bytes, sha256 of what arrived}, and exits.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const tls = require('tls');

const [keyFile, certFile, version] = process.argv.slice(2);
const server = tls.createServer({
  key: fs.readFileSync(keyFile),
  cert: fs.readFileSync(certFile),
  minVersion: version,
  maxVersion: version,
});

server.once('secureConnection', (socket) => {
  server.close(); // one connection, then exit once it is over
  const seen = { protocol: socket.getProtocol(), cipher: socket.getCipher(), bytes: 0 };
  const hash = crypto.createHash('sha256');
  socket.on('data', (chunk) => {
    seen.bytes += chunk.length;
    hash.update(chunk);
  });
  socket.pipe(socket);
  socket.on('error', (err) => {
    console.error(`echo_server: ${err.code || ''} ${err.message}`);
    process.exitCode = 1;
  });
  socket.on('close', () => {
    seen.sha256 = hash.digest('hex');
    console.log(JSON.stringify(seen));
  });
});
server.on('tlsClientError', (err) => {
  console.error(`echo_server: tlsClientError ${err.code || ''} ${err.message}`);
  process.exitCode = 1;
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
