"""Joining Ray for a run: what is shipped to the workers, a bounded wait for the cluster, and the resources checked.

What is shipped: the pack's code only, named one by one (``SHIPPED``: its Python packages ``gpen_arch``,
``face_pipeline``, ``face_jobs``, with the default detector's bundled weights, and ``cli.py``), as Ray's
``py_modules``, never the pack's folder: photos, outputs, virtual environments, ``.git`` or models lying beside
``cli.py`` are not read, hashed nor uploaded (Ray refuses a package above 512 MiB, and hashes every file it ships
first). ``benchmarks/ray_package_size.py`` prints the bytes shipped.

The wait: an address given (``--ray-address host:port`` or ``ray://host:port``) is reached first with a plain TCP
connection of at most ``CONNECT_SECONDS`` (Ray itself retries an address where nothing answers for minutes): nothing
there is a ``RayClusterError`` at once (refused) or after that wait (no answer).

The resources: once joined, a worker that asks for more GPUs or CPUs than the whole cluster has (``ray.
cluster_resources()``) could never start, and Ray would wait for it silently: ``RayClusterError`` before any work,
naming what was asked and what the cluster has.

Ray is imported only when a function here runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Mapping
from pathlib import Path

from ..config import RayOptions, UsageError

#: the pack's code the workers import, relative to its root: packages (folders) and single modules
SHIPPED = ("gpen_arch", "face_pipeline", "face_jobs", "cli.py")
#: left out of the shipped packages (gitignore patterns): caches and any weights dropped there (the bundled OpenCV
#: YuNet ``.onnx`` is shipped: the default detector)
NOT_SHIPPED = ["__pycache__/", "*.py[cod]", "*.pth", "*.pt", "*.safetensors", "*.ckpt", "*.bin"]
#: how long joining an address may wait for its port to answer, in seconds
CONNECT_SECONDS = 10.0
#: what a local Ray instance started by the engine may use for its object store (results travel through it)
LOCAL_OBJECT_STORE_BYTES = 512 * 1024 * 1024
#: the default port of a Ray Client address (``ray://host``)
RAY_CLIENT_PORT = 10001


INSTALL_HINT = 'pip install "ray[data]"'


class RayUnavailableError(ImportError):
    """``--engine ray`` without Ray Data installed."""


def require_ray():
    """The ``ray`` module with Ray Data, or ``RayUnavailableError`` saying how to install it."""
    try:
        import ray
        import ray.data  # the engine needs Ray Data, not only Ray core
    except ImportError as exc:
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed ({exc}); install it with: "
                                  f"{INSTALL_HINT}") from exc
    return ray


class RayClusterError(UsageError):
    """``--engine ray`` with a cluster that cannot run the job: nothing at the address, or fewer resources than one
    worker asks for."""


def code_runtime_env(folder: str | Path) -> dict:
    """The job-level runtime_env that ships this pack's code (``folder``: its root, where ``cli.py`` is) to every
    worker, as ``ray.init(runtime_env=...)`` takes it: ``SHIPPED`` as ``py_modules``, less ``NOT_SHIPPED``. A caller
    that starts Ray itself before ``run_on_ray`` passes this."""
    root = Path(folder)
    missing = [name for name in SHIPPED if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"{root} is not this pack's folder: it lacks {', '.join(missing)} (expected the "
                                f"folder of cli.py, with {', '.join(SHIPPED)})")
    return {"py_modules": [str(root / name) for name in SHIPPED], "excludes": list(NOT_SHIPPED)}


def address_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` that ``address`` names (``host:port``, ``[v6]:port``, ``ray://host[:port]``), or None for one
    Ray resolves itself (``auto``, ``local``, a host without a port)."""
    text = address.strip()
    client = text.startswith("ray://")
    if "://" in text and not client:
        return None
    text = text.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:  # no port (or an IPv6 address without one)
        return (text.strip("[]"), RAY_CLIENT_PORT) if client and text else None
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def reach(address: str, *, seconds: float = CONNECT_SECONDS) -> None:
    """``RayClusterError`` unless something accepts a TCP connection at ``address``'s host and port within
    ``seconds`` (an address Ray resolves itself, such as ``auto``, is left to Ray)."""
    target = address_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=seconds):
            pass
    except OSError as exc:  # refused, unreachable, unknown host, or no answer (TimeoutError) within the wait
        why = f"no answer within {seconds:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayClusterError(f"--ray-address {address}: no Ray cluster there ({why}; the wait is at most "
                              f"{seconds:g} s); start one (ray start --head) or give the address that ray start "
                              f"printed (host:6379, or ray://host:10001 for Ray Client)") from None


def check_resources(options: RayOptions, resources: Mapping[str, float]) -> None:
    """``RayClusterError`` when one worker asks for more than the whole cluster has (``resources``: what
    ``ray.cluster_resources()`` returns): ``options.gpus_per_worker`` GPUs, ``options.threads`` CPUs. Such a worker
    could never start (Ray would wait for it without a word)."""
    asked = {"GPU": options.gpus_per_worker, "CPU": float(options.threads)}
    flags = {"GPU": f"--gpus-per-worker {options.gpus_per_worker:g}", "CPU": f"--threads {options.threads}"}
    has = {name: float(resources.get(name, 0.0)) for name in asked}
    short = [name for name, need in asked.items() if need > has[name] + 1e-9]
    if not short:
        return
    name = short[0]
    fix = ("use --gpus-per-worker 0 (the CPU), or join a cluster with GPU nodes (--ray-address)" if name == "GPU"
           else f"use --threads {max(1, int(has['CPU']))} or fewer, or join a larger cluster (--ray-address)")
    raise RayClusterError(f"{flags[name]}: each Ray worker asks for {asked[name]:g} {name}(s), and the cluster has "
                          f"{has[name]:g} (ray.cluster_resources(): {has['CPU']:g} CPU, {has['GPU']:g} GPU); {fix}")


@contextlib.contextmanager
def connected(options: RayOptions):
    """``with connected(options) as ray:`` Ray for one run, with enough resources for one worker
    (``check_resources``): a Ray already running in this process as it is, else a local instance
    (``options.address`` None) or the cluster at ``options.address`` (``reach``ed first), with the pack's code
    shipped to the workers (``code_runtime_env`` of ``options.working_dir``), shut down afterwards."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        init: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if options.working_dir is not None:
            init["runtime_env"] = code_runtime_env(options.working_dir)
        if options.address is None:
            init["object_store_memory"] = LOCAL_OBJECT_STORE_BYTES
        else:
            reach(options.address)
            init["address"] = options.address
        try:
            ray.init(**init)
        except ConnectionError as exc:  # e.g. --ray-address auto with no cluster on this node
            raise RayClusterError(f"--ray-address {options.address}: {' '.join(str(exc).split())}") from None
        started = True
    try:
        check_resources(options, ray.cluster_resources())
        yield ray
    finally:
        if started:
            ray.shutdown()
