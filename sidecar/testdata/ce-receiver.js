// A function app made with the cloudevents npm package (the JavaScript SDK):
// HTTP.toEvent reads each request, validate() checks it by the spec. Prints
// "EVENT <the event as JSON>" for each accepted event and answers 204, or
// "REJECTED <why>" and answers 400.
const http = require("http");
const { HTTP } = require("cloudevents");

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    try {
      const body = Buffer.concat(chunks).toString("utf8");
      const event = HTTP.toEvent({ headers: req.headers, body });
      event.validate();
      console.log("EVENT " + JSON.stringify(event));
      res.writeHead(204);
      res.end();
    } catch (err) {
      console.log("REJECTED " + (err && err.message) + " " + JSON.stringify((err && err.errors) || ""));
      res.writeHead(400);
      res.end(String(err));
    }
  });
});
server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening on " + process.env.PORT));
