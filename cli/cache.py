"""`spotstack cache ...`: build a model's manifest, serve chunks to peers, pull a model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from spotstack.cli.params import PORT, existing_file, number
from spotstack.runtime.errors import one_line

cache_app = typer.Typer(
    help="Peer model cache: manifests, serving chunks to peers, pulling models.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)

STORE = typer.Option(
    "/dev/shm/spotstack", "--store", envvar="SPOTSTACK_CACHE_STORE", help="The node's memory-backed chunk store."
)
LIMIT = typer.Option(
    16.0,
    "--limit-gib",
    envvar="SPOTSTACK_CACHE_LIMIT_GIB",
    help="Most the store may hold.",
    callback=number(above=0, hi=1 << 20),
)
TOKEN_FILE = typer.Option(
    None,
    "--token-file",
    envvar="SPOTSTACK_CACHE_TOKEN_FILE",
    help="File with the fleet's bearer token (or set SPOTSTACK_CACHE_TOKEN).",
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _token(path: Path | None) -> str:
    """The fleet token from --token-file or SPOTSTACK_CACHE_TOKEN: one line and exit 1 when unusable."""
    from spotstack.runtime.cache.server import MIN_TOKEN_LEN

    if path is not None:
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        where = str(path)
    else:
        token = os.environ.get("SPOTSTACK_CACHE_TOKEN", "").strip()
        where = "SPOTSTACK_CACHE_TOKEN"
        if not token:
            raise _fail("give --token-file or set SPOTSTACK_CACHE_TOKEN", 2)
    if len(token) < MIN_TOKEN_LEN:
        raise _fail(f"the fleet token in {where} is {len(token)} characters; it must be at least {MIN_TOKEN_LEN}")
    return token


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[mix]}"),
        console=err,
        transient=False,
    )


@cache_app.command("manifest")
def manifest(
    url: str = typer.Argument(..., help="The model: s3://bucket/prefix, gs://..., oss://..., or a directory."),
    chunk_mib: int = typer.Option(16, "--chunk-mib", min=1, max=64, help="Chunk size in MiB."),
) -> None:
    """Hash a model's files and write spotstack-manifest.json next to them."""
    from spotstack.runtime.cache.manifest import build_manifest, write_manifest

    if "://" not in url and not Path(url).is_dir():
        raise _fail(f"{url}: {'not a folder' if Path(url).exists() else 'no such folder'}", 2)
    try:
        with _bar() as bar:
            task = bar.add_task("hashing", total=None, mix="")
            m = build_manifest(url, chunk_mib << 20, progress=lambda n: bar.advance(task, n))
        target = write_manifest(url, m)
    except UnicodeError as exc:
        raise _fail(f"{url}: a file name is not UTF-8 ({exc.__class__.__name__}); rename it", 2) from None
    except (OSError, ValueError) as exc:
        raise _fail(f"{url}: {one_line(exc)}", 2) from None
    err.print(
        f"{len(m.files)} files, {m.total_bytes / 1e9:.2f} GB, "
        f"{sum(len(f.chunks) for f in m.files)} chunks of {chunk_mib} MiB -> {target}"
    )
    err.print(f"model id {m.model_id} (how the store names it)")
    err.print("manifest digest (printed below; pin it as model_cache.manifest_digest or --manifest-digest):")
    print(m.digest_hex)


@cache_app.command("verify")
def verify(
    root: Path = typer.Argument(..., help="The model's files: a pulled --dest, or the model's own directory."),
    manifest_url: str = typer.Option(
        None, "--manifest", help="The model's URL (where its manifest is); default: the manifest in ROOT."
    ),
) -> None:
    """Check every file against the manifest: size, each chunk's digest and each file's sha256. Exit 1 on a
    mismatch (each is named), 2 when the manifest cannot be read."""
    from spotstack.runtime.cache.manifest import read_manifest, verify_tree

    try:
        m = read_manifest(manifest_url or str(root))
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] manifest of {manifest_url or root}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    with _bar() as bar:
        task = bar.add_task("verifying", total=m.total_bytes, mix="")
        problems = verify_tree(root, m, progress=lambda n: bar.advance(task, n))
    for p in problems:
        err.print(f"[red]mismatch:[/red] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    err.print(f"{len(m.files)} files, {m.total_bytes / 1e9:.2f} GB: every chunk and file matches the manifest")


@cache_app.command("serve")
def serve(
    store: Path = STORE,
    limit_gib: float = LIMIT,
    token_file: Path = TOKEN_FILE,
    host: str = typer.Option("0.0.0.0", "--host"),
    port: int = typer.Option(8470, "--port", callback=PORT),
    max_transfers: int = typer.Option(
        8, "--max-transfers", help="Chunks sent at once; more get 503.", callback=number(1, 1024)
    ),
    congestion_control: str | None = typer.Option(
        None,
        "--congestion-control",
        help="TCP congestion control to send chunks with (e.g. cubic); default: the host's. BBR without the fq "
        "qdisc paces every connection with a timer interrupt per burst.",
    ),
) -> None:
    """Serve this node's verified chunks to peers (also part of `spotstack agent run`)."""
    from spotstack.runtime.cache.server import PeerServer
    from spotstack.runtime.cache.store import Store

    token = _token(token_file)

    async def run() -> None:
        server = PeerServer(
            Store(store, int(limit_gib * 2**30)),
            token,
            host,
            port,
            max_transfers,
            congestion_control=congestion_control,
        )
        try:
            await server.start()
        except OSError as exc:
            raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        err.print(f"serving chunks from {store} on {host}:{server.port}")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@cache_app.command("pull")
def pull(
    model: str = typer.Argument(..., help="The model's URL (where its manifest is)."),
    dest: Path = typer.Option(..., "--dest", help="Where the model server will read the files."),
    peers: str = typer.Option("", "--peers", help="Comma-separated host:port of peers."),
    peers_file: Path = typer.Option(
        None, "--peers-file", help="A file of host:port lines (local fleets).", callback=existing_file
    ),
    store: Path = STORE,
    limit_gib: float = LIMIT,
    token_file: Path = TOKEN_FILE,
    no_origin: bool = typer.Option(False, "--no-origin", help="Fail rather than read the object store."),
    connections: int = typer.Option(2, "--connections-per-peer", min=1, max=16),
    verify_sha256: bool | None = typer.Option(
        None,
        "--verify-sha256/--chunks-only",
        help="Also check each file's sha256, or trust the chunk hashes. Default: only for version 1 manifests "
        "(xxh3 chunks); BLAKE3 chunks (version 2) are cryptographic.",
    ),
    manifest_digest: str = typer.Option(
        None, "--manifest-digest", help="Refuse any manifest but this one (as `spotstack cache manifest` prints it)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fetch a model from peers' caches (the origin only for what no peer has), verify, place in --dest."""
    from spotstack.runtime.cache.discovery import from_file
    from spotstack.runtime.cache.pull import Origin, PullError, PullOptions, describe, pull
    from spotstack.runtime.cache.sources import resolve_manifest, usable_peers
    from spotstack.runtime.cache.store import Store, StoreFull

    token = _token(token_file)
    peer_list, bad = usable_peers(
        [p.strip() for p in peers.split(",") if p.strip()] + (from_file(peers_file) if peers_file else [])
    )
    for entry in bad:
        err.print(f"[yellow]warning:[/yellow] skipping peer {entry!r}: not host:port", highlight=False)
    try:
        manifest, got_from = resolve_manifest(model, peer_list, token, digest=manifest_digest)
        st = Store(store, int(limit_gib * 2**30))
        with _bar() as bar:
            task = bar.add_task("pulling", total=manifest.total_bytes, mix="")

            def show(p: object) -> None:
                from spotstack.runtime.cache.pull import Progress as P

                assert isinstance(p, P)
                bar.update(
                    task,
                    completed=p.done,
                    total=p.total,
                    mix=f"peers {p.from_peers / 1e9:.2f} GB, origin {p.from_origin / 1e9:.2f} GB",
                )

            result = pull(
                st,
                manifest,
                dest,
                peers=peer_list,
                token=token,
                origin=None if no_origin else Origin(model),
                options=PullOptions(connections_per_peer=connections, verify_sha256=verify_sha256),
                progress=show,
                waiting=lambda message: err.print(message, highlight=False),
            )
        st.remember_source(model, manifest.model_id)
    except (PullError, StoreFull, OSError) as exc:
        raise _fail(str(exc)) from None
    doc = describe(result) | {"manifest_from": got_from}
    if as_json:
        print(json.dumps(doc))
    else:
        err.print(
            f"{doc['bytes'] / 1e9:.2f} GB in {doc['seconds']:.2f}s ({doc['gbps']:.2f} GB/s): "
            f"peers {doc['from_peers'] / 1e9:.2f} GB, origin {doc['from_origin'] / 1e9:.2f} GB, "
            f"{doc['already_cached'] / 1e9:.2f} GB already cached -> {dest}"
        )
