"""Command line: `python -m minisd setup | sync-chapters`."""

from __future__ import annotations

import argparse


def cmd_setup(args: argparse.Namespace) -> None:
    from minisd.assets import fetch_clip_bpe
    from minisd.env import print_environment

    print_environment()
    path = fetch_clip_bpe(force=args.force)
    print(f"CLIP BPE vocabulary: {path}")
    from minisd.tokenizer import CLIPTokenizer

    prompt = "a photograph of an astronaut riding a horse"
    ids = CLIPTokenizer.from_pretrained(path).encode(prompt)
    expected = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # the ids OpenAI's CLIP gives
    print(f"{prompt!r} -> {ids}")
    if ids != expected:
        raise SystemExit(f"tokenizer check failed: expected {expected}; the vocabulary file may be damaged")
    print("tokenizer check: ok")


def cmd_sync_chapters(args: argparse.Namespace) -> None:
    from minisd.notebooks import sync_chapters

    for path, n in sync_chapters(write=not args.check).items():
        print(f"{path}: {n} marked cell(s) {'differ' if args.check else 'rewritten'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minisd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="fetch CLIP's BPE vocabulary and check the installation")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("sync-chapters", help="rewrite the marked chapter cells from the package")
    p.add_argument("--check", action="store_true", help="only report cells that differ")
    p.set_defaults(func=cmd_sync_chapters)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
