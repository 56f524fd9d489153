#!/usr/bin/env node
// Exercises the client-facing MCP features of server-everything (the reference server) with the
// official TypeScript SDK client, directly or through Switchyard:
//
//   node tests/node/ts_features.mjs --transport streamable-http|sse --url URL [options]
//   node tests/node/ts_features.mjs --transport stdio --command CMD [--args JSON_ARRAY] [options]
//
// Options:
//   --prefix P        prefix of server-everything's tool and prompt names (default "ev_"; "" when
//                     talking to server-everything directly)
//   --update-wait MS  how long to wait for notifications/resources/updated (default 2000)
//   --timeout SECS    bound on the whole run (default 45)
//
// The client declares sampling, form elicitation and roots, answering each with a fixed value
// (SAMPLED_TEXT, ELICITED, ROOT below), and records progress, log messages and resource updates.
// In order: logging/setLevel debug; get-roots-list; trigger-sampling-request;
// trigger-elicitation-request; a 1 s trigger-long-running-operation aborted through an
// AbortSignal after 300 ms, then echo; trigger-long-running-operation with a progress token;
// toggle-simulated-logging on and off; completion/complete (completable-prompt, both arguments,
// and the dynamic text resource template); resources/subscribe + toggle-subscriber-updates,
// waiting for an update, then both undone. (Tasks are ts_tasks.mjs's.)
//
// Prints ONE JSON object on stdout, one key per feature, plus `failures`: the features whose
// expected observation was missing or that threw. Exit 0 if there are none, 1 otherwise (the
// JSON is printed either way), 2 on bad usage.
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

const SAMPLED_TEXT = 'switchyard sampled this';
const SAMPLING_MODEL = 'ts-fixed-model';
const ELICITED = { name: 'Ada Lovelace', check: true, email: 'ada@example.com', integer: 7 };
const ROOT = { uri: 'file:///srv/switchyard-ts', name: 'ts-root' };
const SUBSCRIBED_URI = 'demo://resource/static/document/architecture.md';
const CANCEL_AFTER_MS = 300;
const CANCEL_BOUND_MS = 500;
const CLOSE_GRACE_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let childPid; // the stdio server's pid, once spawned

function usageError(message) {
  process.stderr.write(`ts_features: ${message}\n`);
  process.stderr.write(
    'usage: ts_features.mjs --transport streamable-http|sse --url URL | --transport stdio ' +
      '--command CMD [--args JSON_ARRAY]  [--prefix P] [--update-wait MS] [--timeout SECS]\n',
  );
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
        prefix: { type: 'string', default: 'ev_' },
        'update-wait': { type: 'string', default: '2000' },
        timeout: { type: 'string', default: '45' },
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
  let args;
  try {
    args = JSON.parse(values.args);
  } catch (err) {
    usageError(`--args is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) {
    usageError('--args must be a JSON array of strings');
  }
  const updateWaitMs = Number(values['update-wait']);
  const timeoutSecs = Number(values.timeout);
  if (!Number.isFinite(updateWaitMs) || updateWaitMs < 0) usageError('--update-wait must be >= 0');
  if (!Number.isFinite(timeoutSecs) || timeoutSecs <= 0) usageError('--timeout must be > 0');
  return {
    transport,
    url: values.url,
    command: values.command,
    args,
    prefix: values.prefix,
    updateWaitMs,
    timeoutMs: timeoutSecs * 1000,
  };
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

// Make sure a stdio server is gone before we exit: SIGTERM, then SIGKILL, each wait bounded.
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

// Resolves with the first recorded item `pick` accepts, or null after `ms`.
function waitFor(list, pick, ms, waiters) {
  const found = list.find(pick);
  if (found !== undefined) return Promise.resolve(found);
  return new Promise((resolve) => {
    const waiter = (item) => {
      if (!pick(item)) return false;
      clearTimeout(timer);
      resolve(item);
      return true;
    };
    const timer = setTimeout(() => {
      waiters.delete(waiter);
      resolve(null);
    }, ms);
    waiters.add(waiter);
  });
}

function record(list, waiters, item) {
  list.push(item);
  for (const waiter of [...waiters]) if (waiter(item)) waiters.delete(waiter);
}

const text = (result) => (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text);

async function run(opts, client, transport, out, signal) {
  const seen = { sampling: [], elicitation: [], roots: 0, logs: [], updates: [] };
  out.logs = seen.logs; // every log message of the run, in order of arrival
  const logWaiters = new Set();
  const updateWaiters = new Set();
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    seen.sampling.push(request.params);
    return { model: SAMPLING_MODEL, role: 'assistant', content: { type: 'text', text: SAMPLED_TEXT } };
  });
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    const { message, mode, requestedSchema } = request.params;
    seen.elicitation.push({
      message,
      mode: mode ?? null,
      properties: Object.keys(requestedSchema?.properties ?? {}),
      required: requestedSchema?.required ?? [],
    });
    return { action: 'accept', content: ELICITED };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    seen.roots += 1;
    return { roots: [ROOT] };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => record(seen.logs, logWaiters, n.params));
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) =>
    record(seen.updates, updateWaiters, n.params.uri),
  );

  const options = { signal, timeout: opts.timeoutMs };
  const tool = (name) => `${opts.prefix}${name}`;
  const call = (name, args = {}, extra = {}) =>
    client.callTool({ name: tool(name), arguments: args }, undefined, { ...options, ...extra });

  let protocolVersion = null;
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version) => {
    protocolVersion = version;
    setVersion?.(version);
  };
  await client.connect(transport, options);
  out.serverInfo = client.getServerVersion() ?? null;
  out.protocolVersion = protocolVersion;

  // Each feature records what it observed; a throw or a missing observation is a failure.
  const feature = async (key, body) => {
    try {
      out[key] = await body();
    } catch (err) {
      if (signal.aborted) throw err;
      out[key] = { error: describeError(err) };
    }
    if (out[key]?.error || out[key]?.ok === false) out.failures.push(key);
  };

  await feature('setLevel', async () => ({ ok: true, result: await client.setLoggingLevel('debug', options) }));

  await feature('roots', async () => {
    const logsBefore = seen.logs.length;
    const result = await call('get-roots-list');
    return { ok: seen.roots > 0 && !result.isError, requests: seen.roots, result, logs: seen.logs.slice(logsBefore) };
  });

  await feature('sampling', async () => {
    const result = await call('trigger-sampling-request', { prompt: 'rail yards', maxTokens: 16 });
    return { ok: seen.sampling.length === 1 && !result.isError, requests: seen.sampling, result };
  });

  await feature('elicitation', async () => {
    const result = await call('trigger-elicitation-request');
    return { ok: seen.elicitation.length === 1 && !result.isError, requests: seen.elicitation, result };
  });

  await feature('cancellation', async () => {
    const abort = new AbortController();
    const started = Date.now();
    let abortedAt = null;
    const timer = setTimeout(() => {
      abortedAt = Date.now();
      abort.abort('switchyard test cancel');
    }, CANCEL_AFTER_MS);
    let outcome;
    try {
      const result = await call('trigger-long-running-operation', { duration: 1, steps: 1 }, {
        signal: AbortSignal.any([signal, abort.signal]),
      });
      outcome = { resolved: result };
    } catch (err) {
      if (signal.aborted) throw err;
      outcome = { rejected: describeError(err) };
    } finally {
      clearTimeout(timer);
    }
    const settledMs = Date.now() - (abortedAt ?? started);
    const after = await call('echo', { message: 'after cancel' });
    return {
      ok: 'rejected' in outcome && abortedAt !== null && settledMs < CANCEL_BOUND_MS && !after.isError,
      ...outcome,
      settledMs,
      after,
    };
  });

  await feature('progress', async () => {
    const notifications = [];
    const result = await call(
      'trigger-long-running-operation',
      { duration: 1, steps: 2 },
      { onprogress: (p) => notifications.push({ progress: p.progress, total: p.total ?? null }) },
    );
    return { ok: notifications.length > 0 && !result.isError, notifications, result };
  });

  await feature('logging', async () => {
    const before = seen.logs.length;
    const simulated = (params) => /^[A-Z][a-z]+[- ]level[- ]message$/.test(String(params.data));
    const started = await call('toggle-simulated-logging');
    const first = await waitFor(seen.logs.slice(before), simulated, 2000, logWaiters);
    const stopped = await call('toggle-simulated-logging');
    return {
      ok: first !== null,
      first,
      toggled: [...text(started), ...text(stopped)],
    };
  });

  await feature('completion', async () => {
    const prompt = { type: 'ref/prompt', name: tool('completable-prompt') };
    const department = await client.complete({ ref: prompt, argument: { name: 'department', value: 'E' } }, options);
    const name = await client.complete(
      { ref: prompt, argument: { name: 'name', value: '' }, context: { arguments: { department: 'Sales' } } },
      options,
    );
    const resource = await client.complete(
      {
        ref: { type: 'ref/resource', uri: 'demo://resource/dynamic/text/{resourceId}' },
        argument: { name: 'resourceId', value: '42' },
      },
      options,
    );
    return {
      ok: true,
      department: department.completion,
      name: name.completion,
      resource: resource.completion,
    };
  });

  await feature('subscription', async () => {
    await client.subscribeResource({ uri: SUBSCRIBED_URI }, options);
    const t0 = Date.now();
    const toggled = [];
    toggled.push(...text(await call('toggle-subscriber-updates')));
    const update = await waitFor(seen.updates, (uri) => uri === SUBSCRIBED_URI, opts.updateWaitMs, updateWaiters);
    const waitedMs = Date.now() - t0;
    toggled.push(...text(await call('toggle-subscriber-updates')));
    await client.unsubscribeResource({ uri: SUBSCRIBED_URI }, options);
    return { ok: update !== null, uri: SUBSCRIBED_URI, updates: [...seen.updates], waitedMs, toggled };
  });

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
    { name: 'switchyard-ts-features', version: '0.1.0' },
    { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
  );
  const out = { failures: [] };
  const abort = new AbortController();
  let timer;
  const deadline = new Promise((resolve) => {
    timer = setTimeout(() => {
      abort.abort();
      resolve('timeout');
    }, opts.timeoutMs);
  });
  let code = 0;
  try {
    const how = await Promise.race([run(opts, client, transport, out, abort.signal), deadline]);
    if (how === 'timeout') {
      out.failures.push('timeout');
      process.stderr.write(`ts_features: timed out after ${opts.timeoutMs / 1000} s\n`);
    }
  } catch (err) {
    out.failures.push('connection');
    out.error = describeError(err);
    process.stderr.write(`ts_features: ${opts.transport} ${opts.url ?? opts.command}: ${out.error.message}\n`);
  }
  clearTimeout(timer);
  if (out.failures.length > 0) code = 1;
  await Promise.race([client.close().catch(() => {}), sleep(CLOSE_GRACE_MS)]);
  await stopChild();
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(code));
}

await main();
