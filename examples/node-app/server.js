// The Node example: a small HTTP service. Its dependencies (package-lock.json)
// are installed in the base image's /app/node_modules; this file is the app
// layer that changes on every deploy.
"use strict";

const http = require("http");
const escapeHtml = require("escape-html");

let served = 0;
const server = http.createServer((request, response) => {
  if (request.url === "/healthz") {
    response.end("ok\n");
    return;
  }
  served += 1;
  const who = escapeHtml(process.env.GREETING || "node-app");
  response.setHeader("content-type", "text/plain");
  response.end(`hello from ${who} (Node ${process.version}), request ${served}\n`);
});

const port = Number(process.env.PORT || 3000);
server.listen(port, "0.0.0.0", () => {
  console.error(`node-app listening on 0.0.0.0:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
