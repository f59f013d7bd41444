"""What this machine can do, and what to run on it.

``collect()`` gathers facts (CPU, bf16 support, memory, disk, GPUs, package versions,
whether the Hugging Face Hub answers); ``recommend(facts)`` turns facts into a device,
a precision, a thread count and a batch size, each with a one-line reason. Both return
plain JSON-ready dicts: ``runassist env --json`` prints them, and ``snapshot()`` is what
every run folder stores as ``env.json`` (no network there, so it stays fast).

Everything here degrades to ``None`` rather than raising: a missing /proc, no torch,
or a broken CUDA install must never stop a training run from starting.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _metadata
import math
import os
import platform
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HUB_HOST = "huggingface.co"
HUB_PORT = 443

# Distribution names to look up; alternatives in order (onnxruntime ships as several wheels).
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "accelerate": ("accelerate",),
    "peft": ("peft",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "tokenizers": ("tokenizers",),
    "runassist": ("runassist",),
}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
_TRUTHY = {"1", "on", "yes", "true"}  # how huggingface_hub reads its boolean env variables

# Batch-size search bounds. CPU tops out lower: on a few cores a bigger batch is not
# faster per example, it only means fewer optimizer updates per epoch.
BATCH_MIN, BATCH_MAX, BATCH_MAX_CPU = 8, 64, 32
DEFAULT_MODEL_PARAMS = 110_000_000  # BERT-base: a conservative guess when the caller doesn't know


# ---------------------------------------------------------------------------- collect


def collect(*, check_hub: bool = True, hub_timeout: float = 1.5) -> dict[str, Any]:
    """Facts about this machine as one JSON-ready dict. Never raises; unknowns are None. Takes
    BUSY_WINDOW_S to watch what other processes hold (``cpu_facts``)."""
    torch_facts = _torch_facts()
    return {
        "collected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "versions": package_versions(),
        "cpu": cpu_facts(),
        "memory": memory_facts(),
        "disk": disk_facts(os.getcwd()),
        "gpus": torch_facts["gpus"],
        "cuda_version": torch_facts["cuda_version"],
        "torch_threads": torch_facts["threads"],
        "hub": hub_facts(timeout=hub_timeout) if check_hub else _hub_skipped(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata, without importing the packages."""
    versions: dict[str, str | None] = {}
    for key, names in _DISTRIBUTIONS.items():
        versions[key] = None
        for name in names:
            try:
                versions[key] = _metadata.version(name)
                break
            except _metadata.PackageNotFoundError:
                continue
    if versions["runassist"] is None:  # running from a source tree that is not pip-installed
        from runassist import __version__

        versions["runassist"] = __version__
    return versions


BUSY_WINDOW_S = 0.25  # how long cpu_facts watches the other processes (100 Hz jiffies: 25 per core)
BUSY_CORE = 0.5  # CPUs' worth of other processes' time from which a core counts as held


def cpu_facts(*, measure: bool = True) -> dict[str, Any]:
    """The CPU, its bf16 support, the cores this process may use, and how many of them other
    processes hold *now* (``measure``: watched for BUSY_WINDOW_S; off, busy_cores is None)."""
    info = _read_cpuinfo()
    flags = info["flags"]
    bf16_flags = {name: name in flags for name in _BF16_FLAGS}
    logical = os.cpu_count()
    affinity = _affinity_count() or logical or 1
    quota = _cgroup_cpu_quota()
    # A container limited to 2 CPUs of quota still sees all of the host's cores in its
    # affinity mask; running one thread per visible core there just gets throttled.
    usable = min(affinity, max(1, math.floor(quota))) if quota else affinity
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    others = busy_other_cores() if measure else None
    if others is not None:
        # Other processes hold cores of our affinity set; the quota (if any) caps us on top of that.
        held = int(others + 1 - BUSY_CORE)  # 0.49 -> 0, 0.5 -> 1, 1.7 -> 2
        busy, source = max(0, min(usable, held - (affinity - usable))), "proc_stat"
    elif measure and load is not None:
        # No /proc/stat (macOS): the load average is all there is. It is history, not the present
        # (a pip install a minute ago still shows), so it is only the fallback.
        busy, source = min(usable, int(round(load))), "load_average"
    else:
        busy, source = None, None
    return {
        "model": info["model"] or platform.processor() or None,
        "cores_logical": logical,
        "cores_affinity": affinity,
        "cpu_quota": quota,
        "cores_usable": usable,
        "flags_bf16": bf16_flags,
        "bf16_fast": bf16_flags["avx512_bf16"] or bf16_flags["amx_bf16"],
        "load_1m": None if load is None else round(load, 2),
        "others_cores": None if others is None else round(others, 2),
        "busy_cores": busy,
        "busy_source": source,
    }


def busy_other_cores(window: float = BUSY_WINDOW_S, *, stat_path: str = "/proc/stat") -> float | None:
    """CPUs' worth of time that processes other than this one (and its children) used on this
    process's CPUs over the next ``window`` seconds; None where /proc/stat cannot be read.

    The present, not the load average: a load average of 1.66 left by a `pip install` that ended a
    minute ago made the demo train on one core of an idle two-core machine. Counted on the CPUs of
    our affinity mask only (a container pinned to 2 of a host's 64 cores does not care about the
    other 62), with our own CPU time taken out (psutil), so a busy caller does not count itself.
    """
    import time

    cpus = _affinity_cpus()
    before, own_before, t0 = _read_proc_stat(stat_path, cpus), _own_cpu_seconds(), time.monotonic()
    if before is None:
        return None
    time.sleep(window)
    after, own_after, t1 = _read_proc_stat(stat_path, cpus), _own_cpu_seconds(), time.monotonic()
    if after is None or t1 <= t0:
        return None
    return others_from_samples(before, after, t1 - t0, own_after - own_before)


def others_from_samples(before: int, after: int, wall_s: float, own_s: float, *,
                        ticks_per_s: float | None = None) -> float:
    """Other processes' CPUs' worth from two busy-jiffy samples of /proc/stat ``wall_s`` seconds apart,
    less ``own_s`` CPU-seconds of our own."""
    ticks = ticks_per_s or _ticks_per_second()
    busy_s = max(0, after - before) / ticks
    return max(0.0, (busy_s - max(0.0, own_s)) / wall_s)


def _read_proc_stat(path: str, cpus: set[int] | None) -> int | None:
    """Busy jiffies (all but idle and iowait) summed over ``cpus`` (all CPUs when None) from /proc/stat."""
    busy, seen = 0, False
    try:
        with open(path) as handle:
            for line in handle:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if not name[3:].isdigit():
                    break
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                # user nice system idle iowait irq softirq steal (guest time is already in user)
                values = [int(v) for v in rest.split()[:8]]
                values += [0] * (8 - len(values))
                busy += values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
                seen = True
    except (OSError, ValueError):
        return None
    return busy if seen else None


def _own_cpu_seconds() -> float:
    """CPU time of this process and its live children (psutil; children that exited are not counted:
    their time is over, and the window is too short for it to matter)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def memory_facts() -> dict[str, Any]:
    total = available = None
    meminfo = _read_meminfo_kb()
    if "MemTotal" in meminfo:
        total = meminfo["MemTotal"] // 1024
        available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0)) // 1024
    else:
        try:
            import psutil

            vm = psutil.virtual_memory()
            total, available = vm.total // 2**20, vm.available // 2**20
        except Exception:  # noqa: BLE001 - no psutil or an unsupported platform
            pass
    limit_mb, used_mb = _cgroup_memory()
    if limit_mb is not None and total is not None and limit_mb < total:
        # /proc/meminfo shows the host inside a container; the cgroup limit is what kills us.
        total = limit_mb
        available = max(0, min(available if available is not None else limit_mb, limit_mb - (used_mb or 0)))
    return {"total_mb": total, "available_mb": available, "cgroup_limit_mb": limit_mb}


def disk_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return {"path": str(path), "free_mb": None, "total_mb": None}
    return {"path": str(path), "free_mb": usage.free // 2**20, "total_mb": usage.total // 2**20}


def hub_facts(*, timeout: float = 1.5) -> dict[str, Any]:
    """Can we reach the Hub (or the mirror in HF_ENDPOINT)? Honours HF_HUB_OFFLINE."""
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    if offline.strip().lower() in _TRUTHY:
        return {"offline_env": True, "reachable": None, "detail": f"HF_HUB_OFFLINE={offline}"}
    host, port = hub_address()
    reachable, detail = probe_hub(host, port, timeout=timeout)
    proxy = next((v for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)), None)
    if not reachable and proxy:
        detail += f" ({proxy} is set: downloads may still work through the proxy)"
    return {"offline_env": False, "reachable": reachable, "detail": detail}


def hub_address() -> tuple[str, int]:
    """Host and port of the Hub endpoint: HF_ENDPOINT when set (mirrors), else huggingface.co:443."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.hostname:
            try:
                port = parts.port
            except ValueError:
                port = None
            return parts.hostname, port or (80 if parts.scheme == "http" else 443)
    return HUB_HOST, HUB_PORT


def probe_hub(host: str = HUB_HOST, port: int = HUB_PORT, *, timeout: float = 1.5) -> tuple[bool, str]:
    """TCP-connect to host:port; returns (reachable, detail) within ``timeout`` seconds.

    The lookup and connect run in a daemon thread joined with a deadline, because a DNS
    lookup ignores socket timeouts and can block for tens of seconds on a machine without
    network. A thread still stuck after the deadline is abandoned (it is a daemon).
    """
    result: dict[str, Any] = {}
    start = time.monotonic()

    def attempt() -> None:
        try:
            conn = socket.create_connection((host, port), timeout=timeout)
            conn.close()
            result["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - any failure means "not reachable"
            result["error"] = exc

    worker = threading.Thread(target=attempt, name="runassist-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    elapsed_ms = int((time.monotonic() - start) * 1000)
    where = f"{host}:{port}"
    if result.get("ok"):
        return True, f"TCP connect to {where} in {elapsed_ms} ms"
    error = result.get("error")
    if error is None or isinstance(error, (socket.timeout, TimeoutError)):
        return False, f"no answer from {where} within {timeout:g} s (DNS lookup or connect timed out)"
    if isinstance(error, socket.gaierror):
        return False, f"cannot resolve {host}: {error}"
    if isinstance(error, ConnectionRefusedError):
        return False, f"connection to {where} refused"
    return False, f"cannot connect to {where}: {type(error).__name__}: {error}"


def _hub_skipped() -> dict[str, Any]:
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    return {"offline_env": offline.strip().lower() in _TRUTHY, "reachable": None, "detail": "not checked"}


# ---------------------------------------------------------------------------- recommend


def bf16_fast(facts: dict[str, Any]) -> bool:
    """True when the CPU has native bf16 (avx512_bf16 or AMX): bf16 autocast then pays off."""
    cpu = facts.get("cpu") or {}
    flags = cpu.get("flags_bf16") or {}
    return bool(cpu.get("bf16_fast") or flags.get("avx512_bf16") or flags.get("amx_bf16"))


def choose_threads(facts: dict[str, Any]) -> int:
    """Torch threads to use: the usable cores nobody else is busy on, at least one.

    Oversubscription is what hurts: with another process on one of two cores, torch with
    2 threads ran 8-29x slower than with 1 on our machines, so we leave busy cores alone.
    ``busy_cores`` is measured when the facts are collected (``busy_other_cores``): collect them
    right before the work starts, as `train` does.
    """
    cpu = facts.get("cpu") or {}
    usable = cpu.get("cores_usable") or cpu.get("cores_logical") or 1
    busy = cpu.get("busy_cores") or 0
    return max(1, int(usable) - int(busy))


def recommend(facts: dict[str, Any], *, model_params: int | None = None, seq_len: int = 128) -> dict[str, Any]:
    """Device, precision, threads and batch size for a BERT-like model, each with a reason."""
    notes: list[str] = []
    gpus = facts.get("gpus") or []
    gpu = gpus[0] if gpus else None
    cpu = facts.get("cpu") or {}

    if gpu:
        device = "cuda"
        extra = f" (of {len(gpus)})" if len(gpus) > 1 else ""
        notes.append(f"device cuda: {gpu.get('name')}{extra}, {gpu.get('memory_mb')} MB")
    else:
        device = "cpu"
        notes.append("device cpu: no CUDA GPU visible to torch")

    if gpu and gpu.get("bf16"):
        precision = "bf16"
        notes.append("precision bf16: the GPU supports bf16 (fp32 range, no loss scaling needed)")
    elif gpu and (gpu.get("capability") or [0])[0] >= 7:
        # Volta/Turing have fp16 tensor cores but no bf16; fp16 with loss scaling is the fast path.
        precision = "fp16"
        notes.append(f"precision fp16: GPU capability {_cap(gpu)} has fp16 tensor cores but no bf16")
    elif gpu:
        precision = "fp32"
        notes.append(f"precision fp32: GPU capability {_cap(gpu)} has neither bf16 nor fp16 tensor cores")
    elif bf16_fast(facts):
        precision = "bf16"
        which = ", ".join(k for k, v in (cpu.get("flags_bf16") or {}).items() if v) or "bf16 flags"
        notes.append(f"precision bf16: CPU has native bf16 ({which}); "
                     "measured ~2x faster than fp32 on avx512_bf16")
    else:
        precision = "fp32"
        notes.append("precision fp32: CPU lacks avx512_bf16/amx_bf16 (bf16 would be emulated); "
                     "fp16 on CPU is unusably slow")

    threads = choose_threads(facts)
    usable = cpu.get("cores_usable") or cpu.get("cores_logical") or 1
    busy = cpu.get("busy_cores") or 0
    seen = (f"other processes used {cpu.get('others_cores')} CPUs' worth just now"
            if cpu.get("busy_source") == "proc_stat" else f"1-min load {cpu.get('load_1m')}")
    reason = f"{usable} usable core(s), {busy} held by other processes ({seen})"
    if busy:
        reason += "; torch on a core another process holds runs many times slower"
    notes.append(f"threads {threads}: {reason}")

    batch_size, batch_note = _batch_size(facts, device=device, precision=precision,
                                         model_params=model_params, seq_len=seq_len)
    notes.append(batch_note)
    return {"device": device, "precision": precision, "threads": threads,
            "batch_size": batch_size, "notes": notes}


def estimate_memory_mb(model_params: int, *, seq_len: int, precision: str) -> tuple[float, float]:
    """(fixed MB, MB per example) to fine-tune a BERT-like encoder with AdamW.

    Fixed: weights + gradients + two AdamW moments, all fp32 = 16 bytes/parameter.
    Per example: activations kept for backward, after Korthikanti et al. (2022): per layer
    ``s*h*34 + 5*a*s^2`` bytes at 16 bits (a = h/64 heads), doubled for fp32. The shape
    comes from params ≈ 12*L*h^2 + 30522*h with L = 12 layers (BERT-base gives h ≈ 768,
    MiniLM's 33M gives h ≈ 384). Rough by design; it only has to pick a power of two.
    """
    layers, vocab = 12, 30522
    hidden = (-vocab + math.sqrt(vocab**2 + 4 * 12 * layers * model_params)) / (2 * 12 * layers)
    hidden = max(64.0, hidden)
    heads = hidden / 64
    per_layer = 34 * seq_len * hidden + 5 * heads * seq_len**2
    scale = 1.0 if precision in ("bf16", "fp16") else 2.0
    per_example = layers * per_layer * scale
    return model_params * 16 / 2**20, per_example / 2**20


def _batch_size(facts: dict[str, Any], *, device: str, precision: str,
                model_params: int | None, seq_len: int) -> tuple[int, str]:
    params = model_params or DEFAULT_MODEL_PARAMS
    fixed_mb, per_example_mb = estimate_memory_mb(params, seq_len=seq_len, precision=precision)
    if device == "cuda":
        total = (facts.get("gpus") or [{}])[0].get("memory_mb")
        budget = 0.8 * total if total else None  # CUDA context, allocator slack, eval copies
        where, upper = "80% of GPU memory", BATCH_MAX
    else:
        available = (facts.get("memory") or {}).get("available_mb")
        budget = 0.5 * available if available else None  # tokenizer, data, the OS and everyone else
        where, upper = "half the available RAM", BATCH_MAX_CPU
    assumed = "" if model_params else f", {params / 1e6:.0f}M params assumed"
    shape = f"BERT-like, seq_len {seq_len}, {precision}{assumed}"
    if budget is None:
        return 16, f"batch_size 16: memory unknown ({shape})"
    room = budget - fixed_mb
    fits = int(room // per_example_mb) if room > 0 else 0
    size = BATCH_MIN
    while size * 2 <= min(fits, upper):
        size *= 2
    note = (f"batch_size {size}: ~{per_example_mb:.0f} MB activations/example + {fixed_mb:.0f} MB "
            f"weights/optimizer ({shape}) within {budget:.0f} MB ({where})")
    if fits < BATCH_MIN:
        note += "; tight: consider grad_accum, a shorter seq_len or a smaller model"
    return size, note


def _cap(gpu: dict[str, Any]) -> str:
    cap = gpu.get("capability") or []
    return ".".join(str(c) for c in cap) or "unknown"


# ---------------------------------------------------------------------------- snapshot


def snapshot(*, model_params: int | None = None, seq_len: int = 128,
             facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Facts (collected now unless given) and recommendations together, as written to each run
    folder's env.json (no network)."""
    facts = facts or collect(check_hub=False)
    return {"facts": facts, "recommendations": recommend(facts, model_params=model_params, seq_len=seq_len)}


# ---------------------------------------------------------------------------- readers


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    model, flags = None, set()
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return {"model": None, "flags": flags}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key in ("flags", "Features") and not flags:  # x86 / ARM; the first CPU speaks for all
            flags = set(value.split())
        if model is not None and flags:
            break
    return {"model": model, "flags": flags}


def _read_meminfo_kb(path: str = "/proc/meminfo") -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return values


def _affinity_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return None


def _affinity_count() -> int | None:
    cpus = _affinity_cpus()
    return len(cpus) if cpus is not None else None


def _read_first_line(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except OSError:
        return None


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of quota from cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None when unlimited."""
    line = _read_first_line("/sys/fs/cgroup/cpu.max")
    if line:
        quota, _, period = line.partition(" ")
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period):
            return round(int(quota) / int(period), 2)
        return None
    quota_s = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period_s = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    try:
        quota, period = int(quota_s or "-1"), int(period_s or "0")
    except ValueError:
        return None
    return round(quota / period, 2) if quota > 0 and period > 0 else None


def _cgroup_memory() -> tuple[int | None, int | None]:
    """(limit MB, used MB) of this cgroup; limit None when unlimited."""
    for limit_path, used_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                   "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit_s = _read_first_line(limit_path)
        if limit_s is None:
            continue
        used_s = _read_first_line(used_path) or ""
        used = int(used_s) // 2**20 if used_s.isdigit() else None
        # v1 says "unlimited" with a huge page-aligned number rather than "max"
        if not limit_s.isdigit() or int(limit_s) >= 2**60:
            return None, used
        return int(limit_s) // 2**20, used
    return None, None


def _torch_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"gpus": [], "cuda_version": None, "threads": None}
    try:
        import torch
    except Exception:  # noqa: BLE001 - not installed, or a broken install: report no GPU
        return facts
    try:
        facts["threads"] = torch.get_num_threads()
        if not torch.cuda.is_available():
            return facts
        facts["cuda_version"] = torch.version.cuda
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            with torch.cuda.device(index):
                bf16 = bool(torch.cuda.is_bf16_supported())
            facts["gpus"].append({
                "index": index,
                "name": props.name,
                "memory_mb": props.total_memory // 2**20,
                "bf16": bf16,
                "capability": [props.major, props.minor],
            })
    except Exception:  # noqa: BLE001 - a driver problem must not stop `runassist env`
        pass
    return facts
