#!/usr/bin/env node
// An approval flow driven by the official TypeScript SDK client (a 2025 client) against a
// gateway whose approval rules gate the called tool.
//
//   node tests/node/ts_approval.mjs --url URL --key KEY --approver-key KEY --mode MODE
//        --tool NAME --arguments JSON [--timeout SECS]
//
// MODE:
//   retry    no elicitation capability: call (a pending ticket), approve it over REST with
//            the approver's key, call again (runs), call a third time (a new pending ticket)
//   confirm  form elicitation: the handler confirms ({approve: true}); one call
//   url      URL elicitation: the handler has the approver approve the ticket the URL names
//            over REST, then accepts; one call
//
// Prints one JSON object on stdout: {calls: [{result} | {error}], elicitations: [{mode, url?}]}.
// Bad usage exits 2; a connection failure or the timeout exits 1.
import process from 'node:process';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js';

function usage(message) {
  process.stderr.write(`ts_approval: ${message}\n`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      url: { type: 'string' },
      key: { type: 'string' },
      'approver-key': { type: 'string' },
      mode: { type: 'string' },
      tool: { type: 'string' },
      arguments: { type: 'string', default: '{}' },
      timeout: { type: 'string', default: '60' },
    },
    strict: true,
  }));
} catch (err) {
  usage(err.message);
}
for (const name of ['url', 'key', 'approver-key', 'mode', 'tool']) {
  if (!values[name]) usage(`--${name} is required`);
}
if (!['retry', 'confirm', 'url'].includes(values.mode)) usage('--mode: retry, confirm or url');
const args = JSON.parse(values.arguments);
const base = new URL(values.url).origin;
const timeoutMs = Number(values.timeout) * 1000;

async function approve(ticket) {
  const resp = await fetch(`${base}/admin/v1/approvals/${ticket}/approve`, {
    method: 'POST',
    headers: { authorization: `Bearer ${values['approver-key']}` },
  });
  if (resp.status !== 200) throw new Error(`approving ${ticket}: HTTP ${resp.status} ${await resp.text()}`);
}

const capabilities = values.mode === 'retry' ? {} : { elicitation: { form: {}, url: {} } };
const client = new Client({ name: 'ts-approval', version: '1.0.0' }, { capabilities });
const elicitations = [];
if (values.mode !== 'retry') {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    const params = request.params;
    elicitations.push({ mode: params.mode ?? 'form', url: params.url });
    if (params.mode === 'url') {
      await approve(params.url.split('/').pop());
      return { action: 'accept' };
    }
    return { action: 'accept', content: { approve: true } };
  });
}

const transport = new StreamableHTTPClientTransport(new URL(values.url), {
  requestInit: { headers: { authorization: `Bearer ${values.key}` } },
});
const timer = setTimeout(() => {
  process.stderr.write('ts_approval: timed out\n');
  process.exit(1);
}, timeoutMs);

async function call() {
  try {
    return { result: await client.callTool({ name: values.tool, arguments: args }) };
  } catch (err) {
    if (err instanceof McpError) return { error: { code: err.code, message: err.message } };
    throw err;
  }
}

try {
  await client.connect(transport);
  const calls = [];
  if (values.mode === 'retry') {
    const first = await call();
    calls.push(first);
    const ticket = first.result?.structuredContent?.approval?.id;
    if (ticket) await approve(ticket);
    calls.push(await call());
    calls.push(await call());
  } else {
    calls.push(await call());
  }
  process.stdout.write(JSON.stringify({ calls, elicitations }) + '\n');
  await client.close();
  clearTimeout(timer);
} catch (err) {
  process.stderr.write(`ts_approval: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
