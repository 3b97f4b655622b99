// Print node's legacy certificate object for each PEM file named on the command line, as a
// JSON list (Buffers as hex). toLegacyObject() is what tlsSocket.getPeerCertificate() gives.
'use strict';
const { X509Certificate } = require('crypto');
const fs = require('fs');

const hexBuffers = (key, value) =>
  value && value.type === 'Buffer' && Array.isArray(value.data) ?
    Buffer.from(value.data).toString('hex') : value;
const certs = process.argv.slice(2).map((file) => {
  const legacy = new X509Certificate(fs.readFileSync(file)).toLegacyObject();
  return { ...legacy, keys: Object.keys(legacy) };
});
process.stdout.write(JSON.stringify(certs, hexBuffers));
