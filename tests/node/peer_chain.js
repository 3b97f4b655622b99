// Handshake over loopback with a server presenting <key.pem> <chain.pem>, the client trusting
// <ca.pem>; print the client's getPeerCertificate(true) chain as the fingerprint256 of each
// link, leaf first, and whether the last one is its own issuerCertificate (circular).
'use strict';
const fs = require('fs');
const tls = require('tls');

const [keyFile, certFile, caFile] = process.argv.slice(2);
setTimeout(() => { console.error('timed out'); process.exit(2); }, 10000).unref();
const server = tls.createServer({
  key: fs.readFileSync(keyFile),
  cert: fs.readFileSync(certFile),
}, (socket) => socket.end());
server.listen(0, '127.0.0.1', () => {
  const options = { ca: fs.readFileSync(caFile), rejectUnauthorized: false };
  const client = tls.connect(server.address().port, '127.0.0.1', options, () => {
    const fingerprints = [];
    let cert = client.getPeerCertificate(true);
    for (;;) {
      fingerprints.push(cert.fingerprint256);
      if (!cert.issuerCertificate || cert.issuerCertificate === cert) break;
      cert = cert.issuerCertificate;
    }
    const circular = cert.issuerCertificate === cert;
    process.stdout.write(JSON.stringify({ fingerprints, circular }));
    client.destroy();
    server.close();
  });
});
