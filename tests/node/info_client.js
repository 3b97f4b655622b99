// A node TLS client that reports on its connections: node info_client.js CONFIG_JSON
// CONFIG holds tls.connect options (port, host, servername, key, cert, ca: PEM file paths; the
// rest as node takes them) and `connections` (default 1): that many connections one after
// the other, each offering the session the previous one received. On each: write "ping",
// read the echo (so TLS 1.3 tickets have arrived), print one JSON line {"side": "client",
// ...} (see info_common.js), then end. A failed handshake prints {"side": "client",
// "error": CODE, "message": ...}.
'use strict';
const tls = require('tls');
const { tlsOptions, describe, report, deadline } = require('./info_common');

deadline(20);
const config = JSON.parse(process.argv[2]);
const options = { host: '127.0.0.1', ...tlsOptions(config) };

function connect(left, session) {
  if (left === 0) return;
  let latest = session;
  let echoed = '';
  const socket = tls.connect({ ...options, session }, () => {
    socket.write('ping');
  });
  socket.on('session', (data) => { latest = data; });
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    echoed += chunk;
    if (echoed === 'ping') {
      report(describe(socket, 'client'));
      socket.end();
    }
  });
  socket.on('error', (err) => {
    report({ side: 'client', error: err.code || null, message: err.message });
    socket.destroy();
  });
  socket.on('close', () => connect(left - 1, latest));
}

connect(config.connections || 1, undefined);
