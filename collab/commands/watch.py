"""``collab watch [--once]``: follow claims, challenge wrong ones, defend this home's own, resume after restarts."""

from __future__ import annotations

import click

from collab.commands._common import chain_session, emit, log, settings


@click.command("watch")
@click.option("--once", is_flag=True, help="One pass (new claims, one move per open game), then exit.")
@click.option("--source", "sources", multiple=True, help="Blob server URL to fetch claim data from; repeatable.")
@click.option("--serve", "serve_port", type=int, default=None, help="Also serve this home's claims on this port.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between passes.")
@click.pass_context
def watch(ctx: click.Context, once: bool, sources: tuple[str, ...], serve_port: int | None, interval: float) -> None:
    """Watch claims on the deployment and play every game to the end."""
    import time

    from collab.fraudproof.blobserver import BlobServer
    from collab.fraudproof.watcher import Watcher

    session = chain_session(ctx)
    assert session.account is not None
    watcher = Watcher(session.w3, session.deployment, session.account, settings(ctx).home, sources)
    server = None
    if serve_port is not None:
        server = BlobServer(watcher.store, watcher.chain_id, watcher.manager.is_audience, port=serve_port).start()
        log(f"serving claim data on {server.url}")
    events: list[str] = []
    try:
        while True:
            new = watcher.poll()
            for e in new:
                log(e)
            events += new
            if once:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
        games = [g.__dict__ | {"claim_id": "0x" + g.claim_id.hex()} for g in watcher.games()]
        watcher.close()
    emit(ctx, {"events": events, "games": games}, "\n".join(events) or "nothing new")


group = watch
