// Preload for `node --require` that makes every TCP server in the process bind 127.0.0.1,
// whatever host the caller asked for (none, '0.0.0.0', '::', 'localhost', ...).
//
// How: every net.Server (and so http, https, http2, tls; express, hono, ...) binds through
// net.Server.prototype._listen2 (Node's setupListenHandle), after listen() has parsed its
// arguments and looked up any host name. We replace the address there. Doing it at that
// point rather than by rewriting listen()'s arguments keeps listen()'s timing: with no host,
// server.address() is still available as soon as listen() returns, which some callers
// (e.g. the conformance suite's scenario servers) rely on.
//
// - Unix sockets / named pipes (listen(path)) are left alone: not network-reachable.
// - Listening on an inherited handle or file descriptor is refused: we cannot know or
//   change what it is bound to.
// - Safety net: any server that ends up listening on another TCP address (a code path
//   that bypasses _listen2, e.g. a cluster worker whose primary lacks this preload)
//   makes the process fail loudly.
//
// To cover child processes too: NODE_OPTIONS="--require /abs/path/loopback-only.cjs".
'use strict';

const net = require('node:net');

const LOOPBACK = '127.0.0.1';
const proto = net.Server.prototype;
const setupListenHandle = proto._listen2;
const listen = proto.listen;

if (typeof setupListenHandle !== 'function') {
  throw new Error(`loopback-only: net.Server.prototype._listen2 is missing in Node ${process.version}`);
}

function refuse(what) {
  throw new Error(`loopback-only: refusing to listen on ${what}; only ${LOOPBACK} TCP binds are allowed`);
}

proto._listen2 = function loopbackOnlySetup(address, port, addressType, backlog, fd, flags) {
  if (this._handle) refuse('a pre-existing handle');
  if (typeof fd === 'number' && fd >= 0) refuse(`file descriptor ${fd}`);
  const isPipe = typeof address === 'string' && !(typeof port === 'number' && port >= 0);
  if (!isPipe) {
    address = LOOPBACK;
    addressType = 4;
  }
  return setupListenHandle.call(this, address, port, addressType, backlog, fd, flags);
};

function checkBound() {
  const bound = this.address();
  if (bound !== null && typeof bound === 'object' && bound.address !== LOOPBACK) {
    this.close();
    throw new Error(`loopback-only: a server is listening on ${bound.address}:${bound.port}, not ${LOOPBACK}`);
  }
}

proto.listen = function loopbackOnlyListen(...args) {
  this.prependOnceListener('listening', checkBound); // runs before the caller's listeners
  return listen.apply(this, args);
};
