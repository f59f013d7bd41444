"""runassist.env: facts about the machine, the hub probe, and the recommendations."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Importable without an installed package when pytest is run from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runassist import env  # noqa: E402


def _facts(*, avx512_bf16=False, amx_bf16=False, usable=2, busy=0, available_mb=16_000, gpus=()):
    """Synthetic facts in the shape collect() returns (only what recommend() reads)."""
    return {
        "cpu": {
            "cores_logical": usable,
            "cores_usable": usable,
            "flags_bf16": {"avx512_bf16": avx512_bf16, "amx_bf16": amx_bf16, "amx_tile": amx_bf16},
            "bf16_fast": avx512_bf16 or amx_bf16,
            "load_1m": float(busy),
            "busy_cores": busy,
        },
        "memory": {"total_mb": available_mb * 2, "available_mb": available_mb},
        "gpus": list(gpus),
    }


def _gpu(*, bf16=True, memory_mb=81_559, capability=(9, 0)):
    return {"index": 0, "name": "Test GPU", "memory_mb": memory_mb, "bf16": bf16, "capability": list(capability)}


# ---------------------------------------------------------------------------- collect


def test_collect_without_hub_has_typed_fields_and_is_json():
    facts = env.collect(check_hub=False)
    json.loads(json.dumps(facts))  # JSON-ready: no sets, tuples of objects, Paths...

    assert isinstance(facts["python"], str) and facts["python"].count(".") == 2
    assert isinstance(facts["platform"], str)
    assert set(facts["versions"]) == {"torch", "transformers", "accelerate", "peft",
                                      "onnxruntime", "tokenizers", "runassist"}
    assert all(v is None or isinstance(v, str) for v in facts["versions"].values())
    assert facts["versions"]["runassist"]  # from metadata, or __version__ in a source checkout

    cpu = facts["cpu"]
    assert isinstance(cpu["cores_logical"], int) and cpu["cores_logical"] >= 1
    assert isinstance(cpu["cores_usable"], int) and 1 <= cpu["cores_usable"] <= cpu["cores_logical"]
    assert set(cpu["flags_bf16"]) == {"avx512_bf16", "amx_bf16", "amx_tile"}
    assert all(isinstance(v, bool) for v in cpu["flags_bf16"].values())
    assert cpu["bf16_fast"] == (cpu["flags_bf16"]["avx512_bf16"] or cpu["flags_bf16"]["amx_bf16"])
    assert isinstance(cpu["load_1m"], float) and cpu["load_1m"] >= 0
    assert isinstance(cpu["busy_cores"], int) and 0 <= cpu["busy_cores"] <= cpu["cores_usable"]

    mem = facts["memory"]
    assert isinstance(mem["total_mb"], int) and mem["total_mb"] > 0
    assert isinstance(mem["available_mb"], int) and 0 <= mem["available_mb"] <= mem["total_mb"]

    disk = facts["disk"]
    assert disk["path"] == os.getcwd()
    assert isinstance(disk["free_mb"], int) and 0 <= disk["free_mb"] <= disk["total_mb"]

    assert isinstance(facts["gpus"], list)
    for gpu in facts["gpus"]:
        assert {"index", "name", "memory_mb", "bf16", "capability"} <= set(gpu)
    if facts["gpus"]:
        assert isinstance(facts["cuda_version"], str)

    assert facts["hub"]["reachable"] is None and facts["hub"]["detail"] == "not checked"


def test_cpu_facts_match_proc_cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    cpu = env.cpu_facts()
    assert cpu["flags_bf16"]["avx512_bf16"] == ("avx512_bf16" in flags)
    assert cpu["cores_affinity"] == len(os.sched_getaffinity(0))


def test_load_average_is_only_the_fallback(monkeypatch):
    # Without /proc/stat (macOS) the load average is all there is; with it, the load is ignored.
    monkeypatch.setattr(env, "busy_other_cores", lambda *a, **k: None)
    monkeypatch.setattr(env.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    cpu = env.cpu_facts()
    assert (cpu["busy_cores"], cpu["busy_source"]) == (min(1, cpu["cores_usable"]), "load_average")
    monkeypatch.setattr(env.os, "getloadavg", lambda: (500.0, 0.0, 0.0))
    cpu = env.cpu_facts()
    assert cpu["busy_cores"] == cpu["cores_usable"]
    assert env.choose_threads({"cpu": cpu}) == 1
    monkeypatch.setattr(env, "busy_other_cores", lambda *a, **k: 0.1)
    cpu = env.cpu_facts()  # load 500, but nobody holds a core now
    assert (cpu["busy_cores"], cpu["busy_source"]) == (0, "proc_stat")
    assert env.choose_threads({"cpu": cpu}) == cpu["cores_usable"]


@pytest.mark.parametrize("others, affinity, quota, expected", [
    (0.3, 2, None, 0), (0.6, 2, None, 1), (1.9, 2, None, 2), (5.0, 2, None, 2),
    # a quota of 2 CPUs on 8 visible cores: 5 held still leaves 3 free, more than the quota allows us
    (5.0, 8, 2.0, 0), (7.0, 8, 2.0, 1)])
def test_busy_cores_from_the_present(monkeypatch, others, affinity, quota, expected):
    monkeypatch.setattr(env, "busy_other_cores", lambda *a, **k: others)
    monkeypatch.setattr(env, "_affinity_cpus", lambda: set(range(affinity)))
    monkeypatch.setattr(env, "_cgroup_cpu_quota", lambda: quota)
    assert env.cpu_facts()["busy_cores"] == expected


def test_proc_stat_is_read_for_our_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 100 5000 10 0 0 0 0 0\n"
                    "cpu0 100 0 50 2500 5 0 0 0 0 0\n"
                    "cpu1 800 0 50 2500 5 2 3 5 0 0\n"
                    "intr 12345\n")
    assert env._read_proc_stat(str(stat), None) == 150 + 860
    assert env._read_proc_stat(str(stat), {1}) == 860  # user+nice+system+irq+softirq+steal; idle, iowait out
    # 100 ticks/s: 150 busy ticks in 0.5 s is 3 CPUs' worth, less 0.5 CPU-s of our own over 0.5 s: 2
    assert env.others_from_samples(1000, 1150, 0.5, 0.5, ticks_per_s=100) == pytest.approx(2.0)
    assert env.others_from_samples(1000, 1010, 0.5, 0.5, ticks_per_s=100) == 0.0  # never below zero


def _foreign_spinner() -> int:
    """A process spinning on a core that is not ours: started through a shell that exits at once,
    so it is re-parented away from this process tree (as another user's job would be)."""
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_spinning_process_holds_a_core_and_an_exited_one_does_not(monkeypatch):
    """The issue's case: the demo trained on one core of an idle 2-core machine because a pip install
    that had ended left a 1-minute load average of 1.66. The present is measured instead."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this system: the load average is the fallback (tested above)")
    idle = env.busy_other_cores(0.5)
    if idle > 0.3:
        pytest.skip(f"the machine is not idle ({idle:.2f} CPUs' worth used by other processes): "
                    "the exited-process half of this test needs it to be")
    pid = _foreign_spinner()
    try:
        time.sleep(0.3)
        cpu = env.cpu_facts()
        assert cpu["others_cores"] >= 0.7  # a process outside our tree, spinning
        if cpu["cores_usable"] >= 2:
            assert cpu["busy_cores"] >= 1
            assert env.choose_threads({"cpu": cpu}) == cpu["cores_usable"] - cpu["busy_cores"]
    finally:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    # It has exited; the load average it left behind says 1.66, as in the issue.
    monkeypatch.setattr(env.os, "getloadavg", lambda: (1.66, 0.8, 0.3))
    cpu = env.cpu_facts()
    assert cpu["busy_cores"] == 0, cpu
    assert env.choose_threads({"cpu": cpu}) == cpu["cores_usable"]


def test_our_own_children_are_not_counted_as_others():
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this system")
    idle = env.busy_other_cores(0.5)
    if idle > 0.3:
        pytest.skip(f"the machine is not idle ({idle:.2f} CPUs' worth used by other processes)")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # our child: our own work
    try:
        time.sleep(0.3)
        assert env.busy_other_cores(0.5) < 0.5
    finally:
        spin.kill()
        spin.wait()


def test_snapshot_is_fast_json_and_never_touches_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("snapshot() must not open connections")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    snap = env.snapshot()
    assert time.monotonic() - start < 5
    assert set(snap) == {"facts", "recommendations"}
    json.loads(json.dumps(snap))
    assert snap["recommendations"]["threads"] == env.choose_threads(snap["facts"])


# ---------------------------------------------------------------------------- hub probe


@pytest.fixture
def closed_port():
    """A bound, non-listening port on 127.0.0.1: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def listening_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def hanging_network(monkeypatch):
    """Make name lookups block (as DNS does on a machine with no network) until teardown."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(10)
        raise socket.gaierror("released by test teardown")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield hang
    release.set()


def test_probe_refused_port_is_unreachable(closed_port):
    start = time.monotonic()
    reachable, detail = env.probe_hub("127.0.0.1", closed_port, timeout=1.0)
    assert time.monotonic() - start < 1.5
    assert reachable is False
    assert "refused" in detail


def test_probe_listening_port_is_reachable(listening_port):
    reachable, detail = env.probe_hub("127.0.0.1", listening_port, timeout=1.0)
    assert reachable is True
    assert f"127.0.0.1:{listening_port}" in detail


@pytest.mark.parametrize("patched", ["getaddrinfo", "create_connection"])
def test_probe_returns_within_timeout_when_network_hangs(monkeypatch, hanging_network, patched):
    if patched == "create_connection":  # a connect that hangs, whatever the lookup does
        monkeypatch.setattr(socket, "create_connection", hanging_network)
    timeout = 0.3
    start = time.monotonic()
    reachable, detail = env.probe_hub("huggingface.co", 443, timeout=timeout)
    assert time.monotonic() - start < timeout + 0.5
    assert reachable is False
    assert "within 0.3 s" in detail


def test_collect_hub_check_is_bounded_and_uses_hf_endpoint(monkeypatch, hanging_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.mirror.invalid")
    start = time.monotonic()
    hub = env.collect(check_hub=True, hub_timeout=0.3)["hub"]
    # torch import and /proc reads come on top of the probe; the probe itself must not hang
    assert time.monotonic() - start < 0.3 + 0.5 + 5
    assert hub == {"offline_env": False, "reachable": False, "detail": hub["detail"]}
    assert "hub.mirror.invalid:443" in hub["detail"]


def test_hub_offline_env_skips_the_probe(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE=1 must not probe")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    hub = env.hub_facts(timeout=0.5)
    assert hub == {"offline_env": True, "reachable": None, "detail": "HF_HUB_OFFLINE=1"}


def test_hub_facts_reachable_through_hf_endpoint(monkeypatch, listening_port):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening_port}")
    assert env.hub_address() == ("127.0.0.1", listening_port)
    assert env.hub_facts(timeout=1.0)["reachable"] is True


@pytest.mark.parametrize("endpoint, expected", [
    ("", ("huggingface.co", 443)),
    ("https://hf-mirror.com", ("hf-mirror.com", 443)),
    ("http://mirror.local", ("mirror.local", 80)),
    ("mirror.local:8080", ("mirror.local", 8080)),
])
def test_hub_address(monkeypatch, endpoint, expected):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert env.hub_address() == expected


# ---------------------------------------------------------------------------- recommend


def test_cpu_with_avx512_bf16_gets_bf16():
    rec = env.recommend(_facts(avx512_bf16=True))
    assert (rec["device"], rec["precision"]) == ("cpu", "bf16")
    assert env.bf16_fast(_facts(avx512_bf16=True)) is True
    assert env.recommend(_facts(amx_bf16=True))["precision"] == "bf16"


def test_cpu_without_bf16_gets_fp32_never_fp16():
    facts = _facts()
    rec = env.recommend(facts)
    assert (rec["device"], rec["precision"]) == ("cpu", "fp32")
    assert env.bf16_fast(facts) is False


def test_gpu_with_bf16_gets_bf16_on_cuda():
    rec = env.recommend(_facts(gpus=[_gpu(bf16=True)]))
    assert (rec["device"], rec["precision"]) == ("cuda", "bf16")


def test_gpu_without_bf16():
    # Turing (7.5): fp16 tensor cores, no bf16. Pascal (6.x): neither, so fp32.
    assert env.recommend(_facts(gpus=[_gpu(bf16=False, capability=(7, 5))]))["precision"] == "fp16"
    assert env.recommend(_facts(gpus=[_gpu(bf16=False, capability=(6, 1))]))["precision"] == "fp32"


@pytest.mark.parametrize("usable, busy, expected", [(2, 0, 2), (2, 1, 1), (2, 2, 1), (8, 3, 5), (1, 5, 1)])
def test_threads_are_free_cores_at_least_one(usable, busy, expected):
    facts = _facts(usable=usable, busy=busy)
    assert env.choose_threads(facts) == expected
    assert env.recommend(facts)["threads"] == expected


@pytest.mark.parametrize("facts", [
    _facts(available_mb=100),                                  # starved CPU
    _facts(available_mb=4_000),
    _facts(available_mb=1_000_000),                            # huge CPU box
    _facts(gpus=[_gpu(memory_mb=8_000)]),
    _facts(gpus=[_gpu(memory_mb=143_000)]),
    {"cpu": {}, "memory": {}, "gpus": []},                     # nothing known
])
@pytest.mark.parametrize("model_params", [None, 22_000_000, 335_000_000])
def test_batch_size_is_a_power_of_two_between_8_and_64(facts, model_params):
    rec = env.recommend(facts, model_params=model_params, seq_len=256)
    size = rec["batch_size"]
    assert 8 <= size <= 64 and size & (size - 1) == 0
    assert len(rec["notes"]) == 4 and all(isinstance(n, str) and "\n" not in n for n in rec["notes"])


def test_batch_size_grows_with_memory_and_shrinks_with_model_size():
    small = env.recommend(_facts(gpus=[_gpu(memory_mb=6_000)]), model_params=110_000_000)["batch_size"]
    big = env.recommend(_facts(gpus=[_gpu(memory_mb=80_000)]), model_params=110_000_000)["batch_size"]
    assert small < big == 64
    large_model = env.recommend(_facts(gpus=[_gpu(memory_mb=16_000)]), model_params=335_000_000, seq_len=512)
    small_model = env.recommend(_facts(gpus=[_gpu(memory_mb=16_000)]), model_params=22_000_000, seq_len=512)
    assert large_model["batch_size"] < small_model["batch_size"]


def test_memory_estimate_recovers_bert_shapes():
    # 16 bytes/param fixed; activations grow with seq_len and halve in 16-bit
    fixed, per32 = env.estimate_memory_mb(110_000_000, seq_len=128, precision="fp32")
    _, per16 = env.estimate_memory_mb(110_000_000, seq_len=128, precision="bf16")
    _, per32_long = env.estimate_memory_mb(110_000_000, seq_len=512, precision="fp32")
    assert fixed == pytest.approx(110_000_000 * 16 / 2**20)
    assert per16 == pytest.approx(per32 / 2)
    assert per32_long > 4 * per32


def test_recommend_accepts_a_real_snapshot():
    facts = env.collect(check_hub=False)
    rec = env.recommend(facts)
    assert rec["device"] == ("cuda" if facts["gpus"] else "cpu")
    assert rec["precision"] in {"bf16", "fp16", "fp32"}
    if not facts["gpus"]:
        assert rec["precision"] == ("bf16" if facts["cpu"]["bf16_fast"] else "fp32")
