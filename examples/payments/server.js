// payments: a Hot Topic function (Node.js, standard library only) that fails
// on some inputs, to show retries and the dead-letter topic.
//
//   not JSON                 → 400: poison, dead-lettered at once
//   amount over 1000         → 503 every time: the "gateway" times out; the
//                              sidecar retries with backoff, then dead-letters
//                              after hottopic.io/max-deliver attempts
//   payment id ending in odd → 503 on the first attempt only: retried, then fine
//   anything else            → 200: charged
'use strict';
const http = require('node:http');

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const attempt = Number(req.headers['hottopic-delivery'] || 1);
    const id = req.headers['ce-id'];
    let p;
    try {
      p = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      console.log(`event ${id}: not a payment (not JSON): 400`);
      res.writeHead(400).end('a payment must be JSON');
      return;
    }
    if (Number(p.amount) > 1000) {
      console.log(`event ${id}: payment ${p.payment} of ${p.amount}: gateway timeout on attempt ${attempt}: 503`);
      res.writeHead(503, { 'Retry-After': '1' }).end('payment gateway timed out');
      return;
    }
    if (/[13579]$/.test(String(p.payment)) && attempt === 1) {
      console.log(`event ${id}: payment ${p.payment}: gateway busy on attempt 1: 503, will be retried`);
      res.writeHead(503).end('payment gateway busy');
      return;
    }
    console.log(`event ${id}: payment ${p.payment} of ${p.amount} charged on attempt ${attempt}`);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ payment: p.payment, status: 'charged' }));
  });
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
const port = Number(process.env.PORT || 8080);
server.listen(port, () => console.log(`payments listening on port ${port}`));
