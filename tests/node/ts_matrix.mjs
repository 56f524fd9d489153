#!/usr/bin/env node
// Drives the official-SDK fixture backends (tests/fixtures/servers/sdk_*.py) behind Switchyard with
// the official TypeScript SDK client, for tests/e2e/test_official_clients_matrix.py:
//
//   node tests/node/ts_matrix.mjs --transport streamable-http|sse --url URL [options]
//   node tests/node/ts_matrix.mjs --transport stdio --command CMD [--args JSON_ARRAY] [options]
//
// Options:
//   --backends JSON   the backends' prefixes, e.g. ["sio","sse","web"] (each fixture's --name)
//   --tag T           this run's tag; backend B's calls are tagged "T-B"
//   --events FILE     the fixtures' $FIXTURE_EVENTS_FILE, read to see a cancellation arrive
//   --tick-ms MS      the interval between the progress ticks of `ticks` (default 150)
//   --timeout SECS    bound on the whole run (default 60)
//
// The client declares sampling, form elicitation and roots and answers each with a fixed value
// (SAMPLED_TEXT, ELICITED_NAME, ROOT below). It lists tools, prompts, resources and templates,
// then for each backend B (tag "T-B"): whoami_B; sample_for; elicit_for; roots_for; ticks with a
// progress token; logging/setLevel info + note; hold aborted after CANCEL_AFTER_MS, then echo;
// resources/subscribe fixture://B/board/T-B, touch, wait for the update, unsubscribe.
//
// Prints ONE JSON object on stdout, shaped like the Python side's record:
//   {protocolVersion, tools, prompts, resources, templates, backends: {B: {feature: value}}}
// A feature that throws is recorded as {error}; a connection failure as a top-level `error`.
// Exit 0 once the JSON is printed (the test judges it), 2 on bad usage.
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  McpError,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const SAMPLED_TEXT = 'sampled by typescript';
const ELICITED_NAME = 'Ada (typescript)';
const ROOT = { uri: 'file:///srv/typescript-root', name: 'typescript-root' };
const HOLD_MS = 20000;
const CANCEL_AFTER_MS = 500;
const EVENT_MS = 10000;
const CLOSE_GRACE_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let childPid; // the stdio server's pid, once spawned

function usageError(message) {
  process.stderr.write(`ts_matrix: ${message}\n`);
  process.exit(2);
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
        backends: { type: 'string', default: '[]' },
        tag: { type: 'string', default: 'ts' },
        events: { type: 'string' },
        'tick-ms': { type: 'string', default: '150' },
        timeout: { type: 'string', default: '60' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    usageError(err.message);
  }
  const { transport } = values;
  if ((transport === 'streamable-http' || transport === 'sse') && !values.url) usageError('--url needed');
  if (transport === 'stdio' && !values.command) usageError('--command needed');
  if (!['streamable-http', 'sse', 'stdio'].includes(transport)) usageError('bad --transport');
  if (!values.events) usageError('--events needed');
  let args;
  let backends;
  try {
    args = JSON.parse(values.args);
    backends = JSON.parse(values.backends);
  } catch (err) {
    usageError(`bad JSON: ${err.message}`);
  }
  const timeoutSecs = Number(values.timeout);
  if (!Number.isFinite(timeoutSecs) || timeoutSecs <= 0) usageError('--timeout must be > 0');
  return { ...values, args, backends, tickMs: Number(values['tick-ms']), timeoutMs: timeoutSecs * 1000 };
}

function makeTransport(opts) {
  switch (opts.transport) {
    case 'streamable-http':
      return new StreamableHTTPClientTransport(new URL(opts.url));
    case 'sse':
      return new SSEClientTransport(new URL(opts.url));
    default: {
      // The whole environment (the SDK keeps only a few variables by default).
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

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

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

function describeError(err) {
  const out = { name: err?.name ?? typeof err, message: err instanceof Error ? err.message : String(err) };
  if (err instanceof McpError) out.code = err.code;
  return out;
}

// Resolves true once `done()` holds, false after `ms`; re-checked whenever `changed` fires.
function waitUntil(done, ms, waiters) {
  if (done()) return Promise.resolve(true);
  return new Promise((resolve) => {
    const waiter = () => {
      if (!done()) return false;
      clearTimeout(timer);
      resolve(true);
      return true;
    };
    const timer = setTimeout(() => {
      waiters.delete(waiter);
      resolve(false);
    }, ms);
    waiters.add(waiter);
  });
}

function changed(waiters) {
  for (const waiter of [...waiters]) if (waiter()) waiters.delete(waiter);
}

const texts = (result) => (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text);

function eventsOf(file, tag) {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.endsWith(tag));
  } catch {
    return [];
  }
}

async function listAll(fetchPage, key, pick, options) {
  const items = [];
  let cursor;
  for (let page = 0; page < 100; page++) {
    const result = await fetchPage(cursor === undefined ? {} : { cursor }, options);
    for (const item of result[key] ?? []) items.push(pick(item));
    cursor = result.nextCursor;
    if (cursor === undefined || cursor === null) return items.sort();
  }
  throw new Error(`more than 100 pages of ${key}`);
}

async function run(opts, client, transport, out, signal) {
  const seen = { sampling: [], elicitation: [], roots: 0, logs: [], updates: [] };
  const waiters = new Set();
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    seen.sampling.push(request.params.messages.map((m) => m.content?.text ?? '').join(' '));
    changed(waiters);
    return { model: 'ts-model', role: 'assistant', content: { type: 'text', text: SAMPLED_TEXT } };
  });
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    seen.elicitation.push(request.params.message);
    changed(waiters);
    return { action: 'accept', content: { name: ELICITED_NAME } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    seen.roots += 1;
    changed(waiters);
    return { roots: [ROOT] };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    seen.logs.push({ level: n.params.level, data: n.params.data });
    changed(waiters);
  });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    seen.updates.push(n.params.uri);
    changed(waiters);
  });

  const options = { signal, timeout: opts.timeoutMs };
  let protocolVersion = null;
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version) => {
    protocolVersion = version;
    setVersion?.(version);
  };
  await client.connect(transport, options);
  out.protocolVersion = protocolVersion;
  await client.setLoggingLevel('info', options);
  out.tools = await listAll((p, o) => client.listTools(p, o), 'tools', (t) => t.name, options);
  out.prompts = await listAll((p, o) => client.listPrompts(p, o), 'prompts', (p) => p.name, options);
  out.resources = await listAll((p, o) => client.listResources(p, o), 'resources', (r) => r.uri, options);
  out.templates = await listAll(
    (p, o) => client.listResourceTemplates(p, o),
    'resourceTemplates',
    (t) => t.uriTemplate,
    options,
  );
  out.backends = {};

  for (const b of opts.backends) {
    const t = `${opts.tag}-${b}`;
    const rec = {};
    out.backends[b] = rec;
    const call = async (name, args = {}, extra = {}) => {
      const result = await client.callTool({ name: `${b}_${name}`, arguments: args }, undefined, {
        ...options,
        ...extra,
      });
      if (result.isError) throw new Error(`isError: ${JSON.stringify(result.content)}`);
      return texts(result);
    };
    const feature = async (key, body) => {
      try {
        rec[key] = await body();
      } catch (err) {
        if (signal.aborted) throw err;
        rec[key] = { error: describeError(err) };
      }
    };

    await feature('whoami', () => call(`whoami_${b}`));
    let before = seen.sampling.length;
    await feature('sampling', () => call('sample_for', { tag: t }));
    rec.sampling_asked = seen.sampling.slice(before);
    before = seen.elicitation.length;
    await feature('elicitation', () => call('elicit_for', { tag: t }));
    rec.elicitation_asked = seen.elicitation.slice(before);
    await feature('roots', () => call('roots_for', { tag: t }));
    await feature('progress', async () => {
      const ticks = [];
      rec.progress_result = await call(
        'ticks',
        { count: 3, interval_ms: opts.tickMs },
        { onprogress: (p) => ticks.push([p.progress, p.total ?? null]) },
      );
      return ticks;
    });
    await feature('log', async () => {
      const from = seen.logs.length;
      const result = await call('note', { text: `${t} logs this` });
      await waitUntil(() => seen.logs.length > from, EVENT_MS, waiters);
      rec.logged = seen.logs.slice(from);
      return result;
    });
    await feature('cancelled', async () => {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort('cancelled by the test'), CANCEL_AFTER_MS);
      try {
        await call('hold', { tag: t, ms: HOLD_MS }, { signal: AbortSignal.any([signal, abort.signal]) });
        throw new Error('the held call ended by itself');
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      } finally {
        clearTimeout(timer);
      }
      // The backend writes a file: there is nothing to wait on but the clock.
      for (let waited = 0; waited < EVENT_MS && eventsOf(opts.events, t).length === 0; waited += 50) {
        await sleep(50);
      }
      rec.after_cancel = await call('echo', { text: `${t} after cancel` });
      return eventsOf(opts.events, t);
    });
    await feature('touched', async () => {
      const uri = `fixture://${b}/board/${t}`;
      const from = seen.updates.length;
      await client.subscribeResource({ uri }, options);
      const touched = await call('touch', { tag: t });
      await waitUntil(() => seen.updates.length > from, EVENT_MS, waiters);
      rec.updates = seen.updates.slice(from);
      await client.unsubscribeResource({ uri }, options);
      return touched;
    });
  }

  if (transport instanceof StreamableHTTPClientTransport) {
    try {
      await transport.terminateSession();
    } catch {
      // servers may refuse DELETE
    }
  }
}

async function main() {
  const opts = parseCli();
  const transport = makeTransport(opts);
  const client = new Client(
    { name: 'switchyard-ts-matrix', version: '0.1.0' },
    { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
  );
  const out = {};
  const abort = new AbortController();
  let timer;
  const deadline = new Promise((resolve) => {
    timer = setTimeout(() => {
      abort.abort();
      resolve('timeout');
    }, opts.timeoutMs);
  });
  try {
    const how = await Promise.race([run(opts, client, transport, out, abort.signal), deadline]);
    if (how === 'timeout') out.error = { message: `timed out after ${opts.timeoutMs / 1000} s` };
  } catch (err) {
    out.error = describeError(err);
  }
  clearTimeout(timer);
  await Promise.race([client.close().catch(() => {}), sleep(CLOSE_GRACE_MS)]);
  await stopChild();
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

await main();
