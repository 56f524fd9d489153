"""Puts the admin plane and the versioned configuration on an HTTP listener."""

from __future__ import annotations

import socket

from switchyard.admin.context import AdminContext
from switchyard.admin.plane import AdminPlane
from switchyard.config.reload import Reloader
from switchyard.config.schema import SwitchyardConfig
from switchyard.config.versions import DesiredConfig
from switchyard.downstream.guard import Guard
from switchyard.downstream.http import BindError, HttpApp, bind


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BindError(f"admin.listen {text!r}: give host:port, e.g. 127.0.0.1:9090")
    return host.removeprefix("[").removesuffix("]"), int(port)


def install(app: HttpApp, config: SwitchyardConfig, reloader: Reloader) -> socket.socket | None:
    """The versioned configuration (SIGHUP goes through it) and, when enabled, the admin plane;
    the admin plane's own listening socket when `admin.listen` is set."""
    settings = config.admin
    plan = reloader.plan
    desired = DesiredConfig(
        reloader,
        plan.storage,
        "database" if settings.dynamic_registration else "file",
        settings.poll_interval,
    )
    app.on_hangup = desired.hangup
    app.on_started.append(desired.start)
    app.on_stopping.append(desired.stop)
    if not settings.enabled:
        return None
    sock = None
    admin_port = None
    if settings.listen:
        host, port = listen_address(settings.listen)
        sock = bind(host, port)
        admin_port = sock.getsockname()[1]
        gw = config.gateway
        app.admin_guard = Guard.for_bind(host, admin_port, gw.allowed_origins, gw.allowed_hosts)
    ctx = AdminContext(
        app.gateway,
        settings,
        desired,
        plan.storage,
        plan.audit,
        lambda: app.authenticator,
    )
    plane = AdminPlane(ctx, admin_port)
    plane.admission = app.admitted
    app.admin = plane
    return sock
