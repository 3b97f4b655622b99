// Shared by info_server.js and info_client.js: what one end of a node TLS connection
// reports about it, as a JSON-ready object (Buffers become hex strings).
'use strict';
const fs = require('fs');

// Options whose value names a PEM file to read (the rest are passed to node as they are).
const FILE_OPTIONS = ['key', 'cert', 'ca', 'crl', 'dhparam'];

function tlsOptions(config) {
  const options = { ...config };
  for (const name of FILE_OPTIONS) {
    if (typeof options[name] === 'string') options[name] = fs.readFileSync(options[name]);
  }
  delete options.connections;
  return options;
}

// getPeerCertificate(true) as a list, leaf first, each link without issuerCertificate;
// `circular` tells whether the last one was its own issuer (node's mark of a root).
function flattenChain(cert) {
  const chain = [];
  const seen = new Set();
  let circular = false;
  while (cert && Object.keys(cert).length) {
    if (seen.has(cert)) {
      circular = true;
      break;
    }
    seen.add(cert);
    const { issuerCertificate, ...link } = cert;
    chain.push(link);
    cert = issuerCertificate;
  }
  return { chain, circular };
}

const hex = (buf) => (buf ? buf.toString('hex') : null);

function describe(socket, side) {
  const own = socket.getCertificate();
  const session = socket.getSession();
  return {
    side,
    protocol: socket.getProtocol(),
    cipher: socket.getCipher(),
    ephemeralKeyInfo: socket.getEphemeralKeyInfo(),
    certificate: own && Object.keys(own).length ? own : {},
    peerCertificate: flattenChain(socket.getPeerCertificate(true)),
    finished: hex(socket.getFinished()),
    peerFinished: hex(socket.getPeerFinished()),
    ekm: hex(socket.exportKeyingMaterial(32, 'test-label', Buffer.from('ctx'))),
    sessionLength: session ? session.length : null,
    ticket: hex(socket.getTLSTicket()),
    sessionReused: socket.isSessionReused(),
    alpnProtocol: socket.alpnProtocol,
    servername: socket.servername === undefined ? null : socket.servername,
    authorized: socket.authorized,
    authorizationError: socket.authorizationError == null ? null
      : String(socket.authorizationError),
    encrypted: socket.encrypted,
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
    remoteFamily: socket.remoteFamily,
    address: socket.address(),
  };
}

const hexBuffers = (key, value) =>
  value && value.type === 'Buffer' && Array.isArray(value.data) ?
    Buffer.from(value.data).toString('hex') : value;

function report(object) {
  process.stdout.write(JSON.stringify(object, hexBuffers) + '\n');
}

// No test may hang on a peer: exit on our own after `seconds`.
function deadline(seconds) {
  setTimeout(() => {
    console.error(`timed out after ${seconds}s`);
    process.exit(3);
  }, seconds * 1000).unref();
}

module.exports = { tlsOptions, describe, report, deadline };
