// Drives the MCP tasks feature (2025-11-25) with the official TypeScript SDK client:
// call a task-based tool as a task, follow it to its result, then list, get and cancel.
// Usage: node ts_tasks.mjs --url URL --tool NAME [--arguments JSON] [--timeout SECS]
// Prints one JSON object on stdout; exit 1 on failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, i, all) => {
    if (value.startsWith("--")) pairs.push([value.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const timeoutMs = Number(args.timeout ?? 30) * 1000;
const timer = setTimeout(() => {
  process.stderr.write(`timed out after ${timeoutMs} ms\n`);
  process.exit(1);
}, timeoutMs);

const client = new Client(
  { name: "switchyard-ts-tasks", version: "1.0.0" },
  { capabilities: { tasks: { list: {}, cancel: {} } } },
);
const transport = new StreamableHTTPClientTransport(new URL(args.url));
try {
  await client.connect(transport);
  const out = { capabilities: client.getServerCapabilities(), messages: [] };
  const stream = client.experimental.tasks.callToolStream(
    { name: args.tool, arguments: JSON.parse(args.arguments ?? "{}") },
    CallToolResultSchema,
    { task: { ttl: 60000 } },
  );
  let taskId;
  for await (const message of stream) {
    out.messages.push(message.type);
    if (message.type === "taskCreated") taskId = message.task.taskId;
    if (message.type === "result") out.result = message.result;
    if (message.type === "error") out.error = String(message.error);
  }
  out.taskId = taskId;
  out.listed = (await client.experimental.tasks.listTasks()).tasks.map((t) => t.taskId);
  out.status = (await client.experimental.tasks.getTask(taskId)).status;
  try {
    await client.experimental.tasks.getTask("no-such-task");
    out.unknown = "accepted";
  } catch (error) {
    out.unknown = error.code ?? String(error);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  clearTimeout(timer);
  await client.close();
  process.exit(0);
} catch (error) {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
}
