"""The typed run model: what used to be read by string key elsewhere round-trips as attributes."""

from __future__ import annotations

from harness.energy.analysis import EnergySummary
from harness.energy.protocol_checks import CacheSplit
from harness.records import ProcessIdentity, RunStatus
from harness.results import HostInfo, LatencySummary, Manifest, QualitySummary, ServerInfo, SuiteInfo, Summary


def test_host_server_process_and_concurrency_are_typed_and_round_trip():
    process = ProcessIdentity(pgid=7, launcher_pid=7, token="t", server_pid=8, boot_id="b")
    manifest = Manifest(run_id="r", status=RunStatus.COMPLETE, suite=SuiteInfo("s", "s.yaml", "0" * 64, 3),
                        host=HostInfo(platform="Linux", python="3.11", cpu="EPYC", cpu_count=2),
                        settings={"concurrency": 4, "samples": 2},
                        server=ServerInfo("http://x/v1", "m", launched=True, process=process))
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest and again.concurrency == 4 and again.samples == 2
    assert again.server.process.token == "t" and again.host.cpu == "EPYC"


def test_older_manifests_read_with_defaults():
    old = Manifest.from_json({"run_id": "r", "status": "incomplete", "host": {"cpu": "x", "odd": 1},
                              "suite": {"name": "s", "source": "s", "hash": "h", "items": 1},
                              "server": {"base_url": "u", "model": "m", "process": {}}})
    assert old.concurrency == 1 and old.host == HostInfo(cpu="x") and old.server.process is None


def test_the_cache_split_is_typed_in_the_summary():
    cache = CacheSplit(True, 3, 1, 0.05, 2.0, 1.0, 1.5, 0.5)
    summary = Summary(run_id="r", status=RunStatus.COMPLETE, variant="v", suite="s", latency=LatencySummary(),
                      energy=EnergySummary(available=True, cache=cache), quality=QualitySummary())
    assert Summary.from_json(summary.to_json()).energy.cache == cache
    assert Summary.from_json({"energy": {"available": False, "cache": {}}}).energy.cache is None
