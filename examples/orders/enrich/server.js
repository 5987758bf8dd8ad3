// enrich: a Hot Topic function in Node.js (standard library only).
// It takes an order from orders.created, adds the product, prices and tax,
// and answers with the enriched order. The app's annotation
// hottopic.io/output-topic makes the sidecar publish that answer to
// orders.enriched, where the next function (invoice) picks it up.
'use strict';
const http = require('node:http');

const catalog = {
  mug: { name: 'Coffee mug', price: 8.5 },
  tee: { name: 'T-shirt', price: 19.0 },
  cap: { name: 'Baseball cap', price: 14.9 },
};
const vat = { DE: 0.19, FR: 0.2, NL: 0.21, US: 0.0 };

function answer(res, status, body) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json' });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const id = req.headers['ce-id'];
    let order;
    try {
      order = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      // A 4xx other than 408/429 tells the sidecar the event is poison:
      // it is dead-lettered at once instead of being retried.
      console.log(`event ${id}: not JSON, rejected`);
      return answer(res, 400, 'an order must be JSON');
    }
    const product = catalog[order.sku];
    if (!product) {
      console.log(`event ${id}: unknown sku ${JSON.stringify(order.sku)}, rejected`);
      return answer(res, 422, `unknown sku ${order.sku}`);
    }
    const qty = Number(order.qty) || 1;
    const rate = vat[order.country] ?? 0.2;
    const net = Math.round(product.price * qty * 100) / 100;
    const enriched = {
      ...order,
      qty,
      product: product.name,
      unit_price: product.price,
      net,
      vat_rate: rate,
      total: Math.round(net * (1 + rate) * 100) / 100,
      currency: 'EUR',
      enriched_at: new Date().toISOString(),
    };
    console.log(`event ${id}: order ${order.order} enriched, total ${enriched.total} EUR`);
    answer(res, 200, enriched);
  });
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
const port = Number(process.env.PORT || 8080);
server.listen(port, () => console.log(`enrich listening on port ${port}`));
