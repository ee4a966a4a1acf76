#!/usr/bin/env node
// A stand-in for `onair serve`, for developing the web pages without the Rust relay:
//   ONAIR_BIN=tests/browser/lib/mock-relay.js tests/browser/run.sh broadcast.test.js
// It speaks docs/PROTOCOL.md closely enough for the pages (hello, stored headers, a burst,
// live frames, metadata/source events, 401/404/409 refusals, /api/streams) and nothing more:
// no rings with skips, no limits. Not used by `make test`.
import { createServer } from 'node:http';
import { readFileSync, existsSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const listenAddr = opt('--listen', '127.0.0.1:8000');
const config = opt('--config', null);
const root = resolve(new URL('../../../web-player', import.meta.url).pathname);
const BURST_US = 500_000;

const streams = new Map();
const text = config ? readFileSync(config, 'utf8') : '[[streams]]\nname = "radio"\nkey = "SECRET"\n';
for (const block of text.split('[[streams]]').slice(1)) {
  const name = /name\s*=\s*"([^"]*)"/.exec(block)?.[1];
  const key = /key\s*=\s*"([^"]*)"/.exec(block)?.[1];
  if (name) streams.set(name, { name, key, source: null, tracks: [], headers: new Map(), ring: [], listeners: new Set(), metadata: null, framesIn: 0, bytesIn: 0, started: Date.now() });
}

const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.json': 'application/json', '.map': 'application/json', '.md': 'text/plain' };
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/api/streams') {
    const list = [...streams.values()].map((s) => ({ name: s.name, live: !!s.source, tracks: s.tracks, listeners: s.listeners.size, bitrate_bps: 0, frames_in: s.framesIn, frames_out: 0, frames_skipped: 0, bytes_in: s.bytesIn, bytes_out: 0, uptime_s: Math.round((Date.now() - s.started) / 1000), metadata: s.metadata }));
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ streams: list }));
  }
  const rel = url.pathname === '/' ? 'index.html' : url.pathname === '/broadcast' ? 'broadcast.html' : url.pathname.slice(1);
  const file = normalize(join(root, rel));
  if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('not found');
  }
  res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
  res.end(readFileSync(file));
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const [, kind, name] = url.pathname.split('/');
  const s = streams.get(decodeURIComponent(name ?? ''));
  const refuse = (code, why) => socket.end(`HTTP/1.1 ${code} ${why}\r\ncontent-length: ${why.length}\r\n\r\n${why}`);
  if (!s || !['ingest', 'listen'].includes(kind)) return refuse(404, 'no such stream');
  if (kind === 'ingest') {
    if (url.searchParams.get('key') !== s.key) return refuse(401, 'wrong key');
    if (s.source) return refuse(409, 'stream busy');
    wss.handleUpgrade(req, socket, head, (ws) => ingest(s, ws));
  } else {
    wss.handleUpgrade(req, socket, head, (ws) => listen(s, ws));
  }
});

function broadcast(s, data) {
  for (const l of s.listeners) l.send(data);
}

function ingest(s, ws) {
  s.source = ws;
  let started = false;
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const msg = JSON.parse(data.toString());
      if (msg.type === 'start') {
        started = true;
        s.tracks = msg.tracks;
        s.headers.clear();
        s.ring = [];
        broadcast(s, JSON.stringify({ type: 'source', state: 'online', tracks: s.tracks }));
      } else if (msg.type === 'metadata') {
        s.metadata = msg;
        broadcast(s, JSON.stringify(msg));
      }
      return;
    }
    if (!started) return ws.close(4001, 'frame before start');
    s.framesIn++;
    s.bytesIn += data.length;
    const flags = data[0];
    const pts = Number(data.readBigUInt64BE(2));
    if (flags & 2) s.headers.set(data[1], data);
    else s.ring.push({ data, pts, key: !!(flags & 1), video: s.tracks.find((t) => t.id === data[1])?.kind === 'video' });
    if (s.ring.length > 500) s.ring.shift();
    broadcast(s, data);
  });
  ws.on('close', () => {
    s.source = null;
    broadcast(s, JSON.stringify({ type: 'source', state: 'offline' }));
  });
}

function listen(s, ws) {
  ws.send(JSON.stringify({ type: 'hello', version: 1, stream: s.name, live: !!s.source, tracks: s.tracks, metadata: s.metadata, server: 'mock-relay' }));
  for (const h of s.headers.values()) ws.send(h);
  const hasVideo = s.ring.some((f) => f.video);
  const newest = s.ring.at(-1)?.pts ?? 0;
  let start = -1;
  for (let i = s.ring.length - 1; i >= 0; i--) {
    const f = s.ring[i];
    if (f.key && (!hasVideo || f.video)) {
      start = i;
      if (newest - f.pts >= BURST_US) break;
    }
  }
  if (start >= 0) for (const f of s.ring.slice(start)) ws.send(f.data);
  s.listeners.add(ws);
  ws.on('close', () => s.listeners.delete(ws));
}

const [host, port] = listenAddr.split(':');
server.listen(Number(port), host, () => {
  console.error(`INFO onair::server: listening addr=${host}:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
