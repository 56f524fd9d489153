#!/usr/bin/env node
// A small MCP client CLI built on the official TypeScript SDK, used by the tests to check
// that an MCP server (e.g. Switchyard) interoperates with the reference client.
//
//   node tests/node/ts_client.mjs --transport streamable-http|sse --url URL [options]
//   node tests/node/ts_client.mjs --transport stdio --command CMD [--args JSON_ARRAY] [options]
//
// Options:
//   --calls JSON      list of {"tool": NAME, "arguments": {...}} to call, in order (default [])
//   --timeout SECS    bound on connect + listings + calls (default 30); closing the session
//                     and stopping a stdio server afterwards is bounded separately (~10 s max)
//   --bearer-env NAME HTTP transports: send `Authorization: Bearer $NAME` on every request
//                     (the token stays out of the command line)
//
// Prints one JSON object on stdout:
//   {serverInfo, protocolVersion, capabilities, tools: [names], resources: [uris],
//    resourceTemplates: [uriTemplates], prompts: [names], calls: [{tool, result} | {tool, error}]}
// Lists are fetched (following nextCursor) only for capabilities the server advertises, else [].
// A failing call is reported in `calls`, not fatal. Bad usage exits 2; a connection or
// protocol failure, or the timeout, exits 1; both with a message on stderr.
import process from 'node:process';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

const MAX_PAGES = 1000;
const CLOSE_GRACE_MS = 5000;

let childPid; // the stdio server's pid, once spawned

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// The SDK closes a stdio server by ending its stdin, then SIGTERM; but a close already
// under way (e.g. after a failed initialize) is not awaited by a second close(). Make
// sure the child is gone before we exit: SIGTERM, then SIGKILL, each wait bounded.
async function stopChild() {
  if (childPid === undefined) return;
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    for (let waited = 0; waited < 2000 && isAlive(childPid); waited += 50) await sleep(50);
    if (!isAlive(childPid)) return;
    try {
      process.kill(childPid, signal);
    } catch {
      return;
    }
  }
}

function usageError(message) {
  process.stderr.write(`ts_client: ${message}\n`);
  process.stderr.write(
    'usage: ts_client.mjs --transport streamable-http|sse --url URL | --transport stdio ' +
      '--command CMD [--args JSON_ARRAY]  [--calls JSON] [--timeout SECS]\n',
  );
  process.exit(2);
}

function parseJson(flag, text, check, expected) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    usageError(`${flag} is not valid JSON: ${err.message}`);
  }
  if (!check(value)) usageError(`${flag} must be ${expected}`);
  return value;
}

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        transport: { type: 'string' },
        url: { type: 'string' },
        command: { type: 'string' },
        args: { type: 'string', default: '[]' },
        calls: { type: 'string', default: '[]' },
        timeout: { type: 'string', default: '30' },
        'bearer-env': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    usageError(err.message);
  }
  const { transport } = values;
  if (transport === 'streamable-http' || transport === 'sse') {
    if (!values.url) usageError(`--transport ${transport} needs --url`);
    try {
      new URL(values.url);
    } catch {
      usageError(`--url is not a URL: ${values.url}`);
    }
  } else if (transport === 'stdio') {
    if (!values.command) usageError('--transport stdio needs --command');
  } else {
    usageError('--transport must be one of streamable-http, sse, stdio');
  }
  const args = parseJson(
    '--args',
    values.args,
    (v) => Array.isArray(v) && v.every((a) => typeof a === 'string'),
    'a JSON array of strings',
  );
  const calls = parseJson(
    '--calls',
    values.calls,
    (v) =>
      Array.isArray(v) &&
      v.every(
        (c) =>
          c !== null &&
          typeof c === 'object' &&
          typeof c.tool === 'string' &&
          (c.arguments === undefined || (c.arguments !== null && typeof c.arguments === 'object')),
      ),
    'a JSON array of {"tool": string, "arguments": object}',
  );
  const timeoutSecs = Number(values.timeout);
  if (!Number.isFinite(timeoutSecs) || timeoutSecs <= 0) usageError('--timeout must be a positive number');
  let headers;
  const bearerEnv = values['bearer-env'];
  if (bearerEnv !== undefined) {
    const token = process.env[bearerEnv];
    if (!token) usageError(`--bearer-env: $${bearerEnv} is not set`);
    headers = { Authorization: `Bearer ${token}` };
  }
  return {
    transport,
    url: values.url,
    command: values.command,
    args,
    calls,
    headers,
    timeoutMs: timeoutSecs * 1000,
  };
}

function makeTransport(opts) {
  switch (opts.transport) {
    case 'streamable-http':
      return new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers: opts.headers } });
    case 'sse':
      return new SSEClientTransport(new URL(opts.url), { requestInit: { headers: opts.headers } });
    default: {
      // Inherit the whole environment (the SDK default keeps only a few variables), so that
      // e.g. NODE_OPTIONS=--require loopback-only.cjs reaches the server process.
      const env = Object.fromEntries(Object.entries(process.env).filter(([, v]) => typeof v === 'string'));
      const transport = new StdioClientTransport({ command: opts.command, args: opts.args, env, stderr: 'inherit' });
      const start = transport.start.bind(transport);
      transport.start = async () => {
        try {
          await start();
        } finally {
          childPid = transport.pid ?? undefined;
        }
      };
      return transport;
    }
  }
}

function describeError(err) {
  if (err instanceof McpError) {
    const prefix = `MCP error ${err.code}: `;
    const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    return err.data === undefined ? { code: err.code, message } : { code: err.code, message, data: err.data };
  }
  let message = err instanceof Error ? err.message : String(err);
  // fetch() failures say only "fetch failed"; the reason (ECONNREFUSED, ...) is in `cause`.
  for (let cause = err?.cause; cause instanceof Error; cause = cause.cause) message += `: ${cause.message}`;
  return { message };
}

async function listAll(fetchPage, key, pick, requestOptions) {
  const items = [];
  const seen = new Set();
  let cursor;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await fetchPage(cursor === undefined ? {} : { cursor }, requestOptions);
    for (const item of result[key] ?? []) items.push(pick(item));
    cursor = result.nextCursor;
    if (cursor === undefined || cursor === null) return items;
    if (seen.has(cursor)) throw new Error(`server repeated ${key} cursor ${JSON.stringify(cursor)}`);
    seen.add(cursor);
  }
  throw new Error(`more than ${MAX_PAGES} pages of ${key}`);
}

async function run(opts, client, transport, signal) {
  // The negotiated version is handed to transports through setProtocolVersion (HTTP ones
  // have it; stdio does not); wrap or add it to record the version for every transport.
  let protocolVersion = null;
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version) => {
    protocolVersion = version;
    setVersion?.(version);
  };

  const requestOptions = { signal, timeout: opts.timeoutMs };
  await client.connect(transport, requestOptions);
  const capabilities = client.getServerCapabilities() ?? {};
  const out = {
    serverInfo: client.getServerVersion() ?? null,
    protocolVersion,
    capabilities,
    tools: [],
    resources: [],
    resourceTemplates: [],
    prompts: [],
    calls: [],
  };
  if (capabilities.tools) {
    out.tools = await listAll((p, o) => client.listTools(p, o), 'tools', (t) => t.name, requestOptions);
  }
  if (capabilities.resources) {
    out.resources = await listAll((p, o) => client.listResources(p, o), 'resources', (r) => r.uri, requestOptions);
    out.resourceTemplates = await listAll(
      (p, o) => client.listResourceTemplates(p, o),
      'resourceTemplates',
      (t) => t.uriTemplate,
      requestOptions,
    );
  }
  if (capabilities.prompts) {
    out.prompts = await listAll((p, o) => client.listPrompts(p, o), 'prompts', (p) => p.name, requestOptions);
  }
  for (const call of opts.calls) {
    try {
      const result = await client.callTool({ name: call.tool, arguments: call.arguments ?? {} }, undefined, requestOptions);
      out.calls.push({ tool: call.tool, result });
    } catch (err) {
      if (signal.aborted) throw err;
      out.calls.push({ tool: call.tool, error: describeError(err) });
    }
  }
  if (transport instanceof StreamableHTTPClientTransport) {
    try {
      await transport.terminateSession(); // polite DELETE; servers may answer 405
    } catch {
      // ignore: session termination is optional for servers
    }
  }
  return out;
}

async function main() {
  const opts = parseCli();
  const transport = makeTransport(opts);
  const client = new Client({ name: 'switchyard-ts-client', version: '0.1.0' }, { capabilities: {} });
  const abort = new AbortController();
  const shutDown = async () => {
    await Promise.race([client.close().catch(() => {}), sleep(CLOSE_GRACE_MS)]);
    await stopChild();
  };

  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new Error(`timed out after ${opts.timeoutMs / 1000} s`));
    }, opts.timeoutMs);
  });

  let out;
  try {
    out = await Promise.race([run(opts, client, transport, abort.signal), deadline]);
  } catch (err) {
    process.stderr.write(`ts_client: ${opts.transport} ${opts.url ?? opts.command}: ${describeError(err).message}\n`);
    await shutDown();
    process.exit(1);
  }
  clearTimeout(timer);
  await shutDown();
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

await main();
