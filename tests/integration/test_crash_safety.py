"""Crash safety: SIGKILL the real exporter process at random moments under load, restart it on the
same state file, and prove that every acknowledged event is counted exactly once.

Clients post batches of fresh, valid ids over keep-alive HTTP. A ``200`` for a batch of fresh ids must
say ``accepted == len(batch)``, so every acknowledged id is known. A scraper reads ``/metrics`` all the
time; across every kill and restart no usage series may ever go down. At the end every id ever sent is
posted again, batch by batch: an acknowledged batch must come back as all duplicates, an unacknowledged
one (the kill cut its response) as all duplicates or all accepted (a batch is one transaction, never
half-counted). Then ``llm_requests_total`` must equal the number of distinct ids, exactly.

The kill moments come from a seeded RNG (``CRASH_SEED`` overrides the seed; ``CRASH_KILLS`` the count
of the slow variant), so a failing run can be replayed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ExporterProcess

SEED = int(os.environ.get("CRASH_SEED", "20261125"))
COST_MICROS = 123  # every event carries cost_usd=0.000123, so the cost total is exact too
INPUT_TOKENS = 1000
OUTPUT_TOKENS = 100
MODELS = ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash")


def usage_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the persisted usage series (``llm_*`` minus self-metrics and the config gauge)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("llm_") or family.name.startswith("llm_exporter_") \
                or family.name == "llm_budget_limit_usd":
            continue
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests_total(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "llm_requests_total")


def metric_sum(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lbls), v in samples.items()
               if n == name and all(dict(lbls).get(k) == want for k, want in labels.items()))


@dataclass
class Ledger:
    """What the clients know: every batch sent, and whether its 200 came back."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: list[list[str]] = field(default_factory=list)
    unacked: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def acked_ids(self) -> int:
        with self.lock:
            return sum(map(len, self.acked))


def make_batch(prefix: str, size: int, now: float) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "timestamp": now - 1, "tenant": "acme", "customer": f"c{i % 7}",
             "model": MODELS[i % len(MODELS)], "input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
             "duration_ms": 900 + i, "ttft_ms": 100, "status": "ok" if i % 9 else "error",
             "error_type": "timeout", "cost_usd": COST_MICROS / 1e6}
            for i in range(size)]


def client_loop(url: str, name: str, ledger: Ledger, stop: threading.Event, batch: int, pause: float) -> None:
    """Post fresh batches until ``stop``; record each one as acknowledged or not."""
    n = 0
    client = httpx.Client(base_url=url, timeout=10)
    try:
        while not stop.is_set():
            events = make_batch(f"{name}-b{n}", batch, time.time())
            n += 1
            ids = [e["id"] for e in events]
            try:
                response = client.post("/v1/events", content=orjson.dumps({"events": events}),
                                       headers={"Content-Type": "application/json"})
            except httpx.HTTPError:
                with ledger.lock:
                    ledger.unacked.append(ids)
                client.close()  # the server died: a fresh pool, then wait for it to come back
                client = httpx.Client(base_url=url, timeout=10)
                stop.wait(0.05)
                continue
            with ledger.lock:
                ledger.statuses[str(response.status_code)] = ledger.statuses.get(str(response.status_code), 0) + 1
                if response.status_code != 200:
                    ledger.unacked.append(ids)
                    ledger.problems.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                body = response.json()
                if (body["accepted"], body["duplicates"], body["rejected"]) != (len(ids), 0, 0):
                    ledger.problems.append(f"fresh batch {ids[0]}: {body}")
                    ledger.unacked.append(ids)
                else:
                    ledger.acked.append(ids)
            if pause:
                stop.wait(pause)
    finally:
        client.close()


class Scraper:
    """Scrapes /metrics in a loop and checks that no usage series ever goes down, across restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last: dict = {}
        self.scrapes = 0
        self.decreases: list[str] = []
        self.lock = threading.Lock()

    def observe(self, text: str) -> dict:
        samples = usage_samples(text)
        for key, value in samples.items():
            old = self.last.get(key)
            if old is not None and value < old:
                self.decreases.append(f"{key}: {old} -> {value}")
        for key in self.last.keys() - samples.keys():
            self.decreases.append(f"{key}: {self.last[key]} -> (gone)")
        self.last = {**self.last, **samples}
        self.scrapes += 1
        return samples

    def scrape(self) -> dict:
        with self.lock:  # fetch and compare in one step, so scrapes are compared in the order they were taken
            return self.observe(httpx.get(self.url + "/metrics", timeout=10).text)

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scrape()
            except httpx.HTTPError:
                pass  # the exporter is down for a moment
            stop.wait(0.1)


def run_crash_test(tmp_path: Path, kills: int, max_gap: float, clients: int = 2, batch: int = 100,
                   pause: float = 0.01, dedupe_entries: int = 1_000_000) -> dict:
    rng = random.Random(SEED)
    ledger = Ledger()
    exporter = ExporterProcess(tmp_path / "exporter", f"--dedupe.max-entries={dedupe_entries}")
    try:  # whatever fails, the exporter process is stopped
        exporter.start()
        scraper = Scraper(exporter.url)
        kill_under_load(exporter, scraper, ledger, rng, kills, max_gap, clients, batch, pause)
        return verify_exactly_once(exporter, scraper, ledger, kills, dedupe_entries)
    finally:
        exporter.stop()
        exporter.client.close()


def kill_under_load(exporter: ExporterProcess, scraper: Scraper, ledger: Ledger, rng: random.Random, kills: int,
                    max_gap: float, clients: int, batch: int, pause: float) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(exporter.url, f"k{c}", ledger, stop, batch, pause),
                                daemon=True) for c in range(clients)]
    threads.append(threading.Thread(target=scraper.loop, args=(stop,), daemon=True))
    try:
        for thread in threads:
            thread.start()
        gaps = [rng.uniform(0.2, max_gap) for _ in range(kills)]
        gaps[kills // 2] = rng.uniform(5.2, 6.5)  # one kill after the periodic (5 s) checkpoint has run
        for kill, gap in enumerate(gaps):
            time.sleep(gap)  # the random moment
            before = scraper.scrape()
            acked_before = ledger.acked_ids()
            exporter.kill()
            exporter.start()  # same port, same storage
            after = scraper.scrape()
            lower = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) is None or after[k] < v}
            assert not lower, f"kill {kill + 1}: series went below their pre-kill value: {list(lower.items())[:5]}"
            assert requests_total(after) >= acked_before, (
                f"kill {kill + 1}: {acked_before} events acknowledged before the kill, "
                f"only {requests_total(after)} counted after the restart: acknowledged events lost")
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)


def verify_exactly_once(exporter: ExporterProcess, scraper: Scraper, ledger: Ledger, kills: int,
                        dedupe_entries: int) -> dict:
    assert not scraper.decreases, f"usage series went down: {scraper.decreases[:5]}"
    assert not ledger.problems, f"unexpected responses: {ledger.problems[:5]}"
    acked, unacked = ledger.acked, ledger.unacked
    assert acked, "no batch was ever acknowledged"
    all_ids = [i for b in acked + unacked for i in b]
    assert len(all_ids) == len(set(all_ids))
    # An id evicted from a full dedupe window is counted again by design (README, "Idempotency window"):
    # the test only means something while every id still fits.
    assert len(all_ids) <= dedupe_entries, f"{len(all_ids)} ids overflow the dedupe window: lower the load"

    # Every id again: acknowledged ones must all be duplicates; each unacknowledged batch all-or-nothing.
    accepted_now = committed_unacked = 0
    events = [e for ids in acked for e in make_batch(ids[0].rsplit("-", 1)[0], len(ids), time.time())]
    for start in range(0, len(events), 5000):
        chunk = events[start:start + 5000]
        body = exporter.post(chunk).json()
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (0, len(chunk), 0), (
            f"acknowledged ids {chunk[0]['id']}..{chunk[-1]['id']} re-posted: {body['accepted']} accepted "
            f"again (acknowledged events were lost)")
    for ids in unacked:
        body = exporter.post(make_batch(ids[0].rsplit("-", 1)[0], len(ids), time.time())).json()
        assert body["rejected"] == 0 and body["accepted"] + body["duplicates"] == len(ids), body
        assert body["accepted"] in (0, len(ids)), f"unacknowledged batch {ids[0]} was half-committed: {body}"
        accepted_now += body["accepted"]
        committed_unacked += body["duplicates"] == len(ids)

    # Exactly once, and still so after one more kill.
    expected = len(all_ids)
    for moment in ("after the re-post", "after a final kill and restart"):
        samples = usage_samples(exporter.metrics_text())
        assert requests_total(samples) == expected, f"{moment}: {requests_total(samples)} != {expected}"
        assert metric_sum(samples, "llm_tokens_total", token_type="input") == expected * INPUT_TOKENS
        assert metric_sum(samples, "llm_request_duration_seconds_count") == expected
        assert metric_sum(samples, "llm_cost_usd_total") == pytest.approx(expected * COST_MICROS / 1e6, abs=1e-6)
        if moment == "after the re-post":
            exporter.kill()
            exporter.start()
    return {"kills": kills, "ids": expected, "acked_batches": len(acked), "unacked_batches": len(unacked),
            "unacked_but_committed": committed_unacked, "accepted_on_repost": accepted_now,
            "scrapes": scraper.scrapes, "statuses": ledger.statuses}


def test_sigkill_under_load_loses_and_duplicates_nothing(tmp_path, record_property):
    report = run_crash_test(tmp_path, kills=5, max_gap=2.5, pause=0.02)
    print(f"crash safety: {report}")
    for key, value in report.items():
        record_property(key, value)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_many_sigkills_under_heavier_load(tmp_path, record_property):
    kills = int(os.environ.get("CRASH_KILLS", "25"))
    report = run_crash_test(tmp_path, kills=kills, max_gap=7.0, clients=3, batch=200, pause=0.02,
                            dedupe_entries=5_000_000)
    print(f"crash safety (slow): {report}")
    for key, value in report.items():
        record_property(key, value)
