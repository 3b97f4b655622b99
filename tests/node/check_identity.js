// Run tls.checkServerIdentity over a JSON list of [hostname, cert] read from stdin and print
// one verdict per case: {ok} or the error's {code, message, reason, host}.
'use strict';
const tls = require('tls');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const verdicts = JSON.parse(input).map(([host, cert]) => {
    let err;
    try {
      err = tls.checkServerIdentity(host, cert);
    } catch (thrown) {
      err = thrown;
    }
    if (!err) return { ok: true };
    const { code, message, reason, host: errHost } = err;
    return { ok: false, code, message, reason, host: errHost };
  });
  process.stdout.write(JSON.stringify(verdicts));
});
