"""Every module of autophagy imports on its own, as the first autophagy module of a process.

An import cycle only shows when a process happens to import one of its modules first (a DVC stage,
a Kubeflow component, a user's notebook), so each module is imported first in its own forked child
of a process that holds the heavy third-party packages but no autophagy module yet."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import importlib, os, sys, traceback
    import numpy, torch, yaml  # the heavy third-party imports, shared by every child
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            failed.append(name)
    print("FAILED", *failed)
    sys.exit(1 if failed else 0)
    """
)


def _modules() -> list[str]:
    """autophagy's modules, with the subpackages installed from components/ and pipelines/."""
    import autophagy.components
    import autophagy.pipelines

    names = {autophagy.__name__}
    for package in (autophagy, autophagy.components, autophagy.pipelines):
        names.add(package.__name__)
        names.update(info.name for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."))
    return sorted(names)


def test_every_module_imports_first_in_a_fresh_process():
    modules = _modules()
    assert "autophagy.metric_keys" in modules and "autophagy.pipelines.pipeline" in modules
    done = subprocess.run([sys.executable, "-c", CHILD, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-4000:]
