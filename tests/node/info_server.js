// A node TLS server that reports on each connection: node info_server.js CONFIG_JSON
// CONFIG holds tls.createServer options (key, cert, ca, dhparam: PEM file paths; the rest as
// node takes them), `connections`, how many connections to serve (default 1), and `listen`,
// the address to listen on (default 127.0.0.1). Prints {"port": N} once listening, then per
// secure connection one JSON line {"side": "server", ...} (see info_common.js:
// getCertificate(), getPeerCertificate(true) flattened, getCipher(), getProtocol(), finished
// messages, exportKeyingMaterial, ...), echoes what the client sends, and exits once
// `connections` connections have closed. A failed handshake prints {"side": "server",
// "error": CODE, "message": ...} and counts as one.
'use strict';
const tls = require('tls');
const { tlsOptions, describe, report, deadline } = require('./info_common');

deadline(20);
const config = JSON.parse(process.argv[2]);
const { listen = '127.0.0.1', ...options } = config;
let remaining = config.connections || 1;
const server = tls.createServer(tlsOptions(options));

function done() {
  remaining -= 1;
  if (remaining === 0) server.close();
}

server.on('secureConnection', (socket) => {
  report(describe(socket, 'server'));
  socket.on('error', (err) => console.error(`info_server: ${err.code || ''} ${err.message}`));
  socket.on('close', done);
  socket.pipe(socket);
});
server.on('tlsClientError', (err) => {
  report({ side: 'server', error: err.code || null, message: err.message });
  done();
});
server.listen(0, listen, () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
