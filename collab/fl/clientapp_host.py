"""A warm ClientApp host: one long-lived process per SuperNode serves every Flower message the node receives.

Flower's default (``flower-supernode --isolation subprocess``) starts a
SuperExec that launches a fresh ``flwr-clientapp`` process per message
(``flwr/supercore/superexec/executor/subprocess_executor.py``), and each one
re-imports torch/transformers/peft/opacus and reloads the model. Flower 1.42's
warm executors (``supercore/superexec/executor/warm_executor*.py``) exist only
for the Kubernetes executor and agent/model/connector tasks, not ClientApps.
So the SuperNode runs with ``--isolation process`` (it then starts no
SuperExec and only serves its Runtime API) and this process, its parent,
takes the SuperExec's place: it claims ClientApp tasks with the same
``AcquireTask`` call ``run_superexec`` makes, and runs each one in-process
with Flower's own steps from ``supernode/runtime/run_clientapp.py``
(``pull_task_input``, FAB install, the FAB's ``ClientApp``,
``push_message``, ``push_task_output``), each task in its own thread as the
SuperExec starts a process per task. Same protocol, same app; the heavy
imports (:func:`collab.fl.warm.preload`, in the background from the start) and the
base model happen once.

Not ``run_clientapp`` itself: it ends every task with ``flwr_exit``, which
arms a forced ``os._exit`` after 5 s, and its heartbeat and retry helpers
SIGINT their own process when a task's token is gone; fine for a process per
message, fatal for a process serving many. A ClientApp exception becomes an
error reply, as in Flower; a crash of this process ends the participant
(the SuperNode dies with it).

Lifetime: the SuperNode is this process's child and gets SIGKILL when it dies
(``PR_SET_PDEATHSIG``); when the SuperNode exits, this process exits with its
code. Killing the pair is killing this process tree.

Usage: ``python -m collab.fl.clientapp_host --runtime-api-address HOST:PORT -- flower-supernode ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from logging import ERROR, INFO
from types import FrameType
from typing import Any

ACTIVE_POLL_S, IDLE_POLL_S, ACTIVE_FOR_S = 0.25, 1.0, 120.0  # faster while a run exchanges messages (idle: SuperExec's 1 s)
FAB_MODULES = ("client_app", "server_app")  # the app's modules, imported from the installed FAB
TASK_RETRY_S = 120.0  # how long a task's Runtime API calls ride out transport errors
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the host still stops the node on every normal exit
        pass


def _client(address: str, *interceptors: Any, retry: bool) -> Any:
    """A Runtime API client; with ``retry``, transport errors and 502/503/504 are retried, nothing kills us."""
    import httpx
    from flwr.supercore.retry import RetryInvoker, exponential
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor

    def give_up(exc: Exception) -> bool:
        return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code not in (502, 503, 504)

    invoker = RetryInvoker(lambda: exponential(max_delay=10), (httpx.TransportError, httpx.HTTPStatusError),
                           max_tries=None if retry else 1, max_time=TASK_RETRY_S, should_giveup=give_up)
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeTracingInterceptor(), *interceptors], retry_invoker=invoker,
    )


def _heartbeat(client: Any) -> Callable[[], bool]:
    """Flower's task heartbeat, minus its SIGINT when the task is no longer known (that would end this host)."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except httpx.TransportError:
            return False  # retried with backoff by the HeartbeatSender
        except httpx.HTTPStatusError:
            pass  # the token is gone: the task is over, whatever still runs will fail on its next call
        return True

    return beat


def serve_task(address: str, token: str) -> None:
    """Run one claimed ClientApp task in this process, as ``flwr-clientapp --token`` would."""
    from flwr.app import Error, Message
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.config import get_project_dir
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore import log
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    client = _client(address, RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                     RuntimeTokenHttpInterceptor(token), retry=True)
    heartbeat = HeartbeatSender(_heartbeat(client))
    heartbeat.start()
    message = reply = context = None
    status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        message, context, run, fab = pull_task_input(client)
        install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        with _fab_lock:
            _forget_other_fab(get_project_dir(run.fab_id, run.fab_version, fab.hash_str))
            app = load(run.fab_id, run.fab_version, fab.hash_str)
        reply = app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # noqa: BLE001 - as run_clientapp: any failure becomes an error reply
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(exc, LoadClientAppError) else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        details = f"{type(exc)}:<'{exc}'>"
        log(ERROR, "ClientApp raised an exception", exc_info=exc)
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as exc:  # noqa: BLE001 - the node gets the task's status below either way
            log(ERROR, "Failed to push reply message", exc_info=exc)
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()
    log(INFO, "[collab warm host] task done (%s)", status)


_fab_lock = threading.Lock()


def _forget_other_fab(app_dir: Path) -> None:
    """Drop the FAB modules a previous task imported from another FAB, so this task imports its own."""
    for name in FAB_MODULES:
        module = sys.modules.get(name)
        if module is not None and Path(getattr(module, "__file__", "") or "/").resolve().parent != app_dir.resolve():
            del sys.modules[name]


def _preload() -> None:
    from flwr.supercore import log

    from collab.fl import warm

    try:
        warm.preload()
    except Exception as exc:  # noqa: BLE001 - the first train imports (and reports) it again
        log(ERROR, "[collab warm host] preload failed", exc_info=exc)
    logging.getLogger("flwr").propagate = False  # something in the heavy imports configures the root logger


def serve(address: str, node: subprocess.Popen[bytes]) -> int:
    """Claim and run ClientApp tasks until the SuperNode exits; return its exit code."""
    import httpx
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    threading.Thread(target=_preload, name="collab-preload", daemon=True).start()  # hello etc. need none of it
    client = _client(address, RuntimeVersionHttpInterceptor(component_name="SuperExec"), retry=False)
    last_task = 0.0
    try:
        while node.poll() is None:
            try:
                res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            except httpx.HTTPError:  # the SuperNode's Runtime API is not up yet (or going away)
                res = None
            if res is not None and res.HasField("task") and res.token:
                # A thread per task, as the SuperExec starts a process per task: a task that never ends (a
                # message of a run the SuperLink stopped, whose objects never arrive) must not block the next.
                threading.Thread(target=serve_task, args=(address, res.token), name=f"task-{res.task.task_id}",
                                 daemon=True).start()
                last_task = time.monotonic()
                continue
            time.sleep(ACTIVE_POLL_S if time.monotonic() - last_task < ACTIVE_FOR_S else IDLE_POLL_S)
    finally:
        client.close()
    return int(node.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (its --host:--port)")
    parser.add_argument("supernode", nargs=argparse.REMAINDER, help="-- then the flower-supernode command line")
    args = parser.parse_args(argv)
    command = args.supernode[1:] if args.supernode[:1] == ["--"] else args.supernode
    if not command:
        parser.error("the flower-supernode command line is missing (after --)")
    node = subprocess.Popen(command, preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads yet

    def stop(signum: int, _frame: FrameType | None) -> None:
        if node.poll() is None:  # let the SuperNode leave gracefully; PR_SET_PDEATHSIG covers the rest
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return serve(args.runtime_api_address, node)


if __name__ == "__main__":
    sys.exit(main())
