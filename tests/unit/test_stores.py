"""The state several gateway processes will share sits behind small store interfaces: the
tables take their store as a parameter, and a store shared by two tables (as a shared store
will be by two processes) keeps each caller's share exact across both."""

from __future__ import annotations

import pytest

from switchyard.downstream.admission import ClientQuota
from switchyard.sessions import MemorySessionStore, SessionLimits, SessionRegistry
from switchyard.storage.counters import MemoryCounters
from switchyard.subscriptions import MemorySubscriptionStore, Subscriptions


def test_counters_take_is_a_check_and_add_and_release_forgets_at_zero() -> None:
    counters = MemoryCounters()
    assert counters.take("alice", 2) and counters.take("alice", 2)
    assert not counters.take("alice", 2)
    assert counters.take("bob", 2)  # another key has its own count
    assert counters.get("alice") == 2 and counters.owners() == 2
    assert counters.largest() == ("alice", 2)
    assert counters.release("alice") == 1
    assert counters.release("alice", 5) == 0  # never below zero
    assert "alice" not in counters and counters.owners() == 1


def test_two_quotas_on_one_counter_store_share_a_clients_limit() -> None:
    shared = MemoryCounters()
    first, second = ClientQuota(3, shared), ClientQuota(3, shared)
    leases = [first.take("alice"), second.take("alice"), first.take("alice")]
    assert all(lease is not None for lease in leases)
    assert second.take("alice") is None and first.take("alice") is None
    assert second.take("bob") is not None
    lease = leases[0]
    assert lease is not None
    lease.release()
    assert second.take("alice") is not None


def test_two_registries_on_shared_stores_enforce_one_per_caller_cap() -> None:
    owned = MemoryCounters()
    limits = SessionLimits(max_per_principal=2)
    one = SessionRegistry(limits=limits, owned=owned)
    two = SessionRegistry(limits=limits, owned=owned)
    a1 = one.create("t", "api_key#alice")
    a2 = two.create("t", "api_key#alice")
    assert a1 is not None and a2 is not None
    assert one.create("t", "api_key#alice") is None and two.create("t", "api_key#alice") is None
    assert two.create("t", "api_key#bob") is not None  # bob's share is his own
    one.remove(a1.id)
    assert two.create("t", "api_key#alice") is not None


def test_a_registry_finds_sessions_only_in_its_store() -> None:
    store = MemorySessionStore()
    registry = SessionRegistry(store=store)
    session = registry.create("t", "api_key#alice")
    assert session is not None
    assert store.get(session.id) is session and len(store) == 1
    # Another caller's id is unknown to bob, whichever store holds it.
    assert registry.get(session.id, "api_key#bob") is None
    assert registry.get(session.id, "api_key#alice") is session
    registry.remove(session.id)
    assert store.get(session.id) is None and len(registry) == 0


def test_the_subscription_index_says_when_upstream_must_hear() -> None:
    store = MemorySubscriptionStore()
    assert store.join("u", "alice", "b1")  # first: subscribe upstream
    assert not store.join("u", "bob", "b1")
    assert store.holder("u") == "b1" and sorted(store.wanting("u")) == ["alice", "bob"]
    assert not store.leave("u", "alice")
    assert not store.leave("u", "carol")  # never joined: nothing changes
    assert store.leave("u", "bob")  # last: unsubscribe upstream
    assert store.holder("u") is None and store.wanting("u") == []


@pytest.mark.anyio
async def test_an_update_from_a_backend_that_holds_no_such_subscription_is_not_delivered() -> None:
    """A backend speaks only for the subscriptions it holds: one that announces an update to
    a URI another backend serves reaches nobody."""
    store = MemorySubscriptionStore()
    subscriptions = Subscriptions({}, store=store)
    got: list[tuple[str, bytes | None]] = []
    await subscriptions.listen("k", lambda m, p: got.append((m, p)), frozenset())
    store.join("test://doc", "k", "real")
    subscriptions.resource_updated("forger", b'{"uri":"test://doc"}')
    assert got == []
    subscriptions.resource_updated("real", b'{"uri":"test://doc"}')
    assert got == [("notifications/resources/updated", b'{"uri":"test://doc"}')]
