// An event-loop HTTP server (Node.js `http`/`https`) for the lens tests.
//   node longpoll_node.js PORT [CERT KEY]
//   GET  /wait?ms=N  answers "waited N" after N ms (a long poll: the server's turn)
//   POST /echo       reads the whole body, answers its length
//   anything else    answers "ok"
// Node's own request timers are switched off so only the guard can cut a connection.
'use strict';
const fs = require('fs');
const [port, cert, key] = process.argv.slice(2);
const handler = (req, res) => {
  const url = new URL(req.url, 'http://x');
  let received = 0;
  req.on('data', (chunk) => { received += chunk.length; });
  req.on('end', () => {
    const answer = (text) => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (url.pathname === '/wait') {
      const ms = Number(url.searchParams.get('ms') || 0);
      setTimeout(() => answer(`waited ${ms}\n`), ms);
    } else if (url.pathname === '/echo') {
      answer(`received ${received}\n`);
    } else {
      answer('ok\n');
    }
  });
};
const options = cert ? { cert: fs.readFileSync(cert), key: fs.readFileSync(key) } : {};
const server = cert ? require('https').createServer(options, handler) : require('http').createServer(handler);
server.headersTimeout = 0;
server.requestTimeout = 0;
server.keepAliveTimeout = 600000;
server.timeout = 0;
server.listen(Number(port), '127.0.0.1', () => console.log(`listening ${port}`));
