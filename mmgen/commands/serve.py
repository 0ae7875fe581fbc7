"""`mmgen serve`: a local page to generate images from prompts, at http://127.0.0.1:8000/.

The page offers the shipped generators and, with `--runs DIR`, the generator checkpoints
found under DIR. It works offline (no fonts or scripts fetched from anywhere) and runs one
generation at a time; other requests wait in a queue."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="a local web page to generate images from prompts",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the page has no login)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="also offer the DALL-E / DDPM checkpoints found in this directory (e.g. runs)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.web import make_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
    try:
        server = make_server(args.host, args.port, runs=args.runs, verbose=args.verbose)
    except OSError as e:  # port in use, address not available: a message, not a traceback
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if not server.loopback_only:
        print(f"mmgen serve: warning: listening on {args.host}: anyone who can reach this machine can use "
              f"the page (it has no login)", file=sys.stderr)
    models = server.models()
    print(f"mmgen serve: {server.url}  ({len(models)} models: {', '.join(m.id for m in models)})")
    print("press Ctrl+C to stop", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nmmgen serve: stopped")
    finally:
        server.server_close()
    return 0
