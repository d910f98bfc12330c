"""Drive an interactive command through a pseudo-terminal, as a person at a keyboard would."""

from __future__ import annotations

import os
import select
import subprocess
import time


def run_in_pty(cmd: list[str], script: list[tuple[str, str]], env: dict[str, str] | None = None,
               cwd: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``cmd`` on a pty; for each (prompt, reply) wait for the prompt, then type the reply."""
    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            start_new_session=True)
    os.close(slave)
    seen = ""
    deadline = time.monotonic() + timeout
    steps = list(script)

    def pump(wait: float) -> bool:
        nonlocal seen
        ready, _, _ = select.select([master], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(master, 4096)
        except OSError:
            return False
        if not data:
            return False
        seen += data.decode("utf-8", "replace")
        return True

    try:
        cursor = 0
        while steps and time.monotonic() < deadline:
            prompt, reply = steps[0]
            index = seen.find(prompt, cursor)
            if index >= 0:
                cursor = index + len(prompt)
                os.write(master, reply.encode())
                steps.pop(0)
                continue
            if not pump(0.1) and proc.poll() is not None:
                break
        while proc.poll() is None and time.monotonic() < deadline:
            pump(0.1)
        while pump(0):
            if not select.select([master], [], [], 0)[0]:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    if steps:
        raise AssertionError(f"never saw prompt {steps[0][0]!r}; output so far:\n{seen}")
    return proc.returncode, seen
