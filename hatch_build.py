"""Builds `switchyard.wire._members`, the native scanner of large frames, where a C compiler is.

Without one the wheel is pure Python and frames are read by msgspec alone: the scanner is a
shortcut, never a requirement (see `switchyard.wire.frame`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/switchyard/wire/_members.c")


class NativeScanner(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        source = Path(self.root, SOURCE)
        target = source.with_name("_members" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        # Written beside the target, then renamed over it: a process running the old build
        # keeps the file it mapped.
        built = target.with_name(target.name + ".tmp")
        compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
        command = [
            *shlex.split(compiler),
            "-O2",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Werror",
            "-I",
            sysconfig.get_paths()["include"],
            str(source),
            "-o",
            str(built),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            built.unlink(missing_ok=True)
            detail = getattr(exc, "stderr", None) or str(exc)
            self.app.display_warning(f"native scanner not built, frames read by msgspec: {detail}")
            return
        os.replace(built, target)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"switchyard/wire/{target.name}"
