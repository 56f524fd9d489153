"""Demo backend ``notes``: an in-memory notebook over stdio, built on the official MCP SDK.

Offers tools (``add_note``, ``list_notes``, ``get_note``, ``search_notes``,
``delete_note``), a static resource (``notes://all``), a resource template
(``notes://note/{id}``), a prompt (``summarize``) and argument completion for the
prompt's ``topic`` and the template's ``id``.

Notes live in the memory of one process: each start begins with the same two
welcome notes, and everything added is lost when the process exits. Run it as
``switchyard demo notes``; it speaks MCP over stdin/stdout and logs only to stderr
(at WARNING).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

SERVER_NAME = "switchyard-demo-notes"
NOTE_TEMPLATE = "notes://note/{id}"
MAX_NOTES = 1000
MAX_TITLE = 200
MAX_BODY = 20_000
MAX_TAGS = 20
MAX_COMPLETIONS = 100  # the protocol caps a completion at 100 values

_F = TypeVar("_F", bound=Callable[..., Any])
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,}")


class Note(BaseModel):
    """One note."""

    id: int = Field(description="Note id, unique within this server process.")
    title: str = Field(description="Short title.")
    body: str = Field(description="Note text.")
    tags: list[str] = Field(description="Lower-case tags.")
    created: str = Field(description="Creation time, ISO 8601 in UTC.")
    uri: str = Field(description="Resource URI of the note.")


class NoteSummary(BaseModel):
    """A note without its body."""

    id: int = Field(description="Note id.")
    title: str = Field(description="Short title.")
    tags: list[str] = Field(description="Lower-case tags.")
    uri: str = Field(description="Resource URI of the note.")


class NoteList(BaseModel):
    """A list of notes, oldest first."""

    count: int = Field(description="Number of notes listed.")
    notes: list[NoteSummary] = Field(description="The notes, oldest first.")


@dataclass
class Notebook:
    """The in-memory store behind the server. Not thread-safe: used from the event loop."""

    notes: dict[int, Note] = field(default_factory=dict)
    next_id: int = 1

    def add(self, title: str, body: str, tags: list[str]) -> Note:
        title = title.strip()
        if not title:
            raise ToolError("A note needs a non-empty title.")
        if len(title) > MAX_TITLE:
            raise ToolError(f"The title is longer than {MAX_TITLE} characters.")
        if len(body) > MAX_BODY:
            raise ToolError(f"The body is longer than {MAX_BODY} characters.")
        clean = sorted({t.strip().lower() for t in tags if t.strip()})
        if len(clean) > MAX_TAGS:
            raise ToolError(f"A note can have at most {MAX_TAGS} tags.")
        if len(self.notes) >= MAX_NOTES:
            raise ToolError(f"The notebook is full ({MAX_NOTES} notes); delete some first.")
        note = Note(
            id=self.next_id,
            title=title,
            body=body,
            tags=clean,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            uri=f"notes://note/{self.next_id}",
        )
        self.notes[note.id] = note
        self.next_id += 1
        return note

    def get(self, note_id: int) -> Note | None:
        return self.notes.get(note_id)

    def matching(self, topic: str) -> list[Note]:
        """Notes whose title, body or tags mention ``topic`` (all notes for an empty topic)."""
        needle = topic.strip().lower()
        return [
            n
            for n in self.notes.values()
            if not needle
            or needle in n.title.lower()
            or needle in n.body.lower()
            or needle in n.tags
        ]

    def topics(self) -> list[str]:
        """Tags first, then distinct title words, for completing a topic."""
        tags = sorted({t for n in self.notes.values() for t in n.tags})
        words = sorted(
            {w.lower() for n in self.notes.values() for w in _WORD.findall(n.title)} - set(tags)
        )
        return tags + words


def _summary(note: Note) -> NoteSummary:
    return NoteSummary(id=note.id, title=note.title, tags=note.tags, uri=note.uri)


def _listing(notes: list[Note]) -> NoteList:
    return NoteList(count=len(notes), notes=[_summary(n) for n in notes])


def _markdown(note: Note) -> str:
    tags = ", ".join(note.tags) if note.tags else "(none)"
    footer = f"id: {note.id}  tags: {tags}  created: {note.created}"
    return f"# {note.title}\n\n{note.body}\n\n---\n{footer}\n"


def _complete(candidates: list[str], prefix: str) -> Completion:
    needle = prefix.strip().lower()
    found = [c for c in candidates if c.lower().startswith(needle)]
    return Completion(
        values=found[:MAX_COMPLETIONS], total=len(found), has_more=len(found) > MAX_COMPLETIONS
    )


def seed(book: Notebook) -> None:
    """Put the two welcome notes every process starts with into ``book``."""
    book.add(
        "Welcome to Switchyard",
        "This note lives in the memory of the notes demo server. Add your own with "
        "add_note; they disappear when the server stops.",
        ["switchyard", "demo"],
    )
    book.add(
        "Gateway ideas",
        "One endpoint in front of many MCP servers: route tools by prefix, keep both "
        "protocol eras working, and restart crashed backends.",
        ["switchyard", "ideas"],
    )


def build_server(book: Notebook | None = None) -> MCPServer:
    """Build the notes demo server (not yet running) over ``book`` (a seeded one by default)."""
    if book is None:
        book = Notebook()
        seed(book)
    notebook = book

    mcp: MCPServer = MCPServer(
        name=SERVER_NAME,
        title="Notes (Switchyard demo)",
        instructions=(
            "A small in-memory notebook. Add notes with `add_note`, find them with "
            "`list_notes` or `search_notes`, read one with `get_note` or the "
            "notes://note/{id} resource. Notes are lost when the server stops."
        ),
        version="1.0.0",
        log_level="WARNING",
    )
    reader = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )

    @mcp.tool(
        title="Add a note",
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )
    async def add_note(
        title: Annotated[str, Field(description="Short title of the note.")],
        body: Annotated[str, Field(description="Text of the note.")],
        tags: Annotated[
            list[str] | None, Field(description="Optional tags, e.g. ['work', 'ideas'].")
        ] = None,
    ) -> Note:
        """Add a note to the notebook and return it with its new id."""
        return notebook.add(title, body, tags or [])

    @mcp.tool(title="List notes", annotations=reader)
    async def list_notes(
        tag: Annotated[str | None, Field(description="Only list notes carrying this tag.")] = None,
    ) -> NoteList:
        """List the notes (id, title, tags), oldest first, optionally only those with a tag."""
        notes = list(notebook.notes.values())
        if tag is not None and tag.strip():
            wanted = tag.strip().lower()
            notes = [n for n in notes if wanted in n.tags]
        return _listing(notes)

    @mcp.tool(title="Get a note", annotations=reader)
    async def get_note(
        id: Annotated[int, Field(description="Id of the note, as returned by list_notes.")],
    ) -> Note:
        """Return one note, including its full text."""
        note = notebook.get(id)
        if note is None:
            raise ToolError(f"There is no note with id {id}.")
        return note

    @mcp.tool(title="Search notes", annotations=reader)
    async def search_notes(
        query: Annotated[str, Field(description="Text to look for in titles, bodies and tags.")],
    ) -> NoteList:
        """Find the notes whose title, body or tags contain the query (case-insensitive)."""
        if not query.strip():
            raise ToolError("The query is empty.")
        return _listing(notebook.matching(query))

    @mcp.tool(
        title="Delete a note",
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    async def delete_note(
        id: Annotated[int, Field(description="Id of the note to delete.")],
    ) -> str:
        """Delete a note for good and say which one was deleted."""
        note = notebook.notes.pop(id, None)
        if note is None:
            raise ToolError(f"There is no note with id {id}.")
        return f"Deleted note {id}: {note.title}"

    @mcp.resource(
        "notes://all",
        name="all-notes",
        title="All notes",
        description="Index of every note (id, title, tags, uri) as JSON.",
        mime_type="application/json",
    )
    async def all_notes() -> str:
        return json.dumps(_listing(list(notebook.notes.values())).model_dump(), indent=2)

    @mcp.resource(
        NOTE_TEMPLATE,
        name="note",
        title="A note",
        description="One note as Markdown, by id, e.g. notes://note/1.",
        mime_type="text/markdown",
    )
    async def note_resource(id: str) -> str:
        note = notebook.get(int(id)) if id.isdigit() else None
        if note is None:
            raise ResourceNotFoundError(f"There is no note with id {id!r}")
        return _markdown(note)

    @mcp.prompt(title="Summarize notes on a topic")
    async def summarize(
        topic: Annotated[
            str,
            Field(description="Tag or word to summarize notes about; empty means all notes."),
        ],
    ) -> str:
        """Ask the assistant to summarize the notes about a topic, with the notes included."""
        notes = notebook.matching(topic)
        about = f"about {topic.strip()!r}" if topic.strip() else "in the notebook"
        if not notes:
            return f"There are no notes {about}. Say so, and suggest what notes might be useful."
        parts = [f"Summarize these {len(notes)} notes {about} in a few bullet points:"]
        parts.extend(_markdown(n) for n in notes)
        return "\n\n".join(parts)

    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, ResourceTemplateReference):
            if ref.uri == NOTE_TEMPLATE and argument.name == "id":
                return _complete([str(i) for i in notebook.notes], argument.value)
            return None
        if ref.name == "summarize" and argument.name == "topic":
            return _complete(notebook.topics(), argument.value)
        return None

    # `MCPServer.completion` is unannotated in the SDK, hence the cast.
    register = cast(
        Callable[[_F], _F],
        mcp.completion(),  # type: ignore[no-untyped-call]
    )
    register(complete)
    return mcp


def main() -> None:
    """Run the notes demo server over stdio until stdin closes."""
    build_server().run("stdio")


if __name__ == "__main__":
    main()
