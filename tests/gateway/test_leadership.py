"""The loop's leader election on the real file-lock backend: one leader at a time, handed
over when the leader resigns or its process dies, callbacks told of every change."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from gateway.loop.leadership import FileLockCampaign, Leadership, process_identity


def _leadership(path, events: list, name: str) -> Leadership:
    lead = Leadership(FileLockCampaign(path, process_identity(name)), retry_seconds=0.05,
                      renew_deadline_seconds=float("inf"))

    async def elected():
        events.append((name, "elected"))

    async def deposed():
        events.append((name, "deposed"))

    lead.on_change(elected, deposed)
    return lead


async def _until(predicate, timeout: float = 10.0) -> None:
    async def wait():
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


def test_one_leader_at_a_time_and_a_resigning_leader_hands_over(tmp_path):
    async def run():
        events: list = []
        a, b = _leadership(tmp_path / "leader.lock", events, "a"), _leadership(tmp_path / "leader.lock", events, "b")
        a.start()
        await _until(lambda: a.is_leader)
        b.start()
        await asyncio.sleep(0.3)  # several of b's campaigns
        assert a.is_leader and not b.is_leader
        assert await b.holder() == a.identity  # followers can say who leads
        await a.close()
        await _until(lambda: b.is_leader)
        assert events == [("a", "elected"), ("a", "deposed"), ("b", "elected")]
        assert b.terms == 1 and await b.holder() == b.identity
        await b.close()

    asyncio.run(run())


def test_a_leader_that_dies_is_replaced(tmp_path):
    lock = tmp_path / "leader.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gateway.loop.leadership import FileLockCampaign
        campaign = FileLockCampaign(Path({str(lock)!r}), "other-process")  # held while referenced
        assert campaign.try_lead()
        print("leading", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "leading"

        async def run():
            events: list = []
            b = _leadership(lock, events, "b")
            b.start()
            await asyncio.sleep(0.3)
            assert not b.is_leader and await b.holder() == "other-process"
            holder.kill()  # no clean-up runs: the kernel drops the lock with the process
            await _until(lambda: b.is_leader)
            assert events == [("b", "elected")]
            await b.close()

        asyncio.run(run())
    finally:
        holder.kill()
        holder.wait()


def test_identities_differ_per_process_even_with_a_configured_name():
    assert process_identity("gw") != process_identity("gw")
    assert process_identity("gw").startswith("gw-")


def test_the_lease_backend_behind_the_same_interface_survives_an_unreachable_api_server(tmp_path, monkeypatch):
    from model_repo.triton import free_port

    from gateway.loop.leadership import LeaseCampaign

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{free_port()}", insecure-skip-tls-verify: true}}}}]
        users: [{{name: u, user: {{token: t}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u, namespace: ml}}}}]
        current-context: x
    """))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def run():
        lead = Leadership(LeaseCampaign("rel-tunegate-loop", "ml", process_identity("pod"), 15), retry_seconds=0.1,
                          renew_deadline_seconds=10)
        lead.start()
        await asyncio.sleep(1.0)  # campaigns fail (connection refused): a follower, still campaigning
        assert not lead.is_leader and not lead._task.done()
        await lead.close()

    asyncio.run(run())
