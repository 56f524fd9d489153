"""Method names, and which request field names the target of each routed method."""

from typing import Final

INITIALIZE: Final = "initialize"
INITIALIZED: Final = "notifications/initialized"
DISCOVER: Final = "server/discover"
PING: Final = "ping"
TOOLS_LIST: Final = "tools/list"
TOOLS_CALL: Final = "tools/call"
PROMPTS_LIST: Final = "prompts/list"
PROMPTS_GET: Final = "prompts/get"
RESOURCES_LIST: Final = "resources/list"
RESOURCES_READ: Final = "resources/read"
TEMPLATES_LIST: Final = "resources/templates/list"
COMPLETE: Final = "completion/complete"
SET_LEVEL: Final = "logging/setLevel"
SUBSCRIBE: Final = "resources/subscribe"
UNSUBSCRIBE: Final = "resources/unsubscribe"
LISTEN: Final = "subscriptions/listen"
ACKNOWLEDGED: Final = "notifications/subscriptions/acknowledged"
RESOURCE_UPDATED: Final = "notifications/resources/updated"
TASKS_GET: Final = "tasks/get"
TASKS_RESULT: Final = "tasks/result"
TASKS_CANCEL: Final = "tasks/cancel"
TASKS_UPDATE: Final = "tasks/update"
TASKS_LIST: Final = "tasks/list"
TASK_STATUS: Final = "notifications/tasks/status"
CANCELLED: Final = "notifications/cancelled"
PROGRESS: Final = "notifications/progress"
MESSAGE: Final = "notifications/message"
TOOLS_CHANGED: Final = "notifications/tools/list_changed"
PROMPTS_CHANGED: Final = "notifications/prompts/list_changed"
RESOURCES_CHANGED: Final = "notifications/resources/list_changed"

LIST_METHODS: Final = frozenset({TOOLS_LIST, PROMPTS_LIST, RESOURCES_LIST, TEMPLATES_LIST})

# 2026-07-28: the body field an `Mcp-Name` header must mirror.
NAME_FIELDS: Final = {TOOLS_CALL: "name", PROMPTS_GET: "name", RESOURCES_READ: "uri"}

# Results a 2026-07-28 peer may cache: they carry ttlMs and cacheScope.
CACHEABLE: Final = frozenset({DISCOVER, *LIST_METHODS, RESOURCES_READ})
