"""Build the emoji dataset assets shipped in mmgen/data/assets/ (run once, by a maintainer).

    apt-get update && apt-get install -y fonts-noto-color-emoji unicode-data
    python scripts/build_emoji.py   # writes mmgen/data/assets/emoji_64.npy.xz, emoji.json, EMOJI_LICENSE

Source: every "fully-qualified" emoji of Unicode's emoji-test.txt (Debian unicode-data,
Unicode 15.0) except the "Component" group (skin-tone and hair swatches), rendered with
Debian's Noto Color Emoji font (fonts-noto-color-emoji; a CBDT bitmap font, so only size
109 exists) through Pillow with embedded_color=True, composited on white, cropped to the
glyph, centred on a square white canvas and downsampled (Lanczos) to 64x64 RGB.

Storage (the repo budget is 8 MiB): the 64x64 uint8 array is stored at 7 bits per channel
(q = round(x * 127 / 255); the loader maps back with round(q * 255 / 127): max error 1/255)
as an xz-compressed .npy (7.4 MiB; lossless 8-bit would be 9.8 MiB, zlib npz 14 MiB).
The 32x32 set is the 2x2 box average of the 64x64 one, computed by the loader.
A sequence the font cannot draw as one glyph (rendered much wider than tall) is skipped
and reported. Captions are the CLDR names from emoji-test.txt ("grinning face",
"waving hand: medium skin tone"). Labels are the 9 emoji groups.
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
COPYRIGHT = "/usr/share/doc/fonts-noto-color-emoji/copyright"
APACHE = "/usr/share/common-licenses/Apache-2.0"
OUT = os.path.join(os.path.dirname(__file__), "..", "mmgen", "data", "assets")
QMAX = 127  # 7 bits per channel
SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}


def parse_emoji_test(path: str):
    """[(codepoints, name, group, subgroup)] for fully-qualified emoji."""
    out, group, sub = [], None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                sub = line.split(":", 1)[1].strip()
            elif line and not line.startswith("#"):
                cps, rest = line.split(";", 1)
                status, comment = rest.split("#", 1)
                if status.strip() != "fully-qualified":
                    continue
                # comment: "<emoji> E<version> <name>"
                name = comment.strip().split(" ", 2)[2]
                out.append(([int(c, 16) for c in cps.split()], name, group, sub))
    return out


def render(text: str, font, size: int = 128):
    """RGB uint8 (size, size, 3) of ``text`` on white, or None if it is not one glyph."""
    canvas = Image.new("RGBA", (512, 256), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    w, h = glyph.size
    if w > 1.3 * max(h, 100) or h < 20:  # fell apart into several glyphs / nothing drawn
        return None
    side = max(w, h)
    sq = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    sq.alpha_composite(glyph, ((side - w) // 2, (side - h) // 2))
    return sq.convert("RGB").resize((size, size), Image.LANCZOS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--font", default=FONT)
    ap.add_argument("--emoji-test", default=EMOJI_TEST)
    args = ap.parse_args(argv)
    for p in (args.font, args.emoji_test):
        if not os.path.isfile(p):
            sys.exit(f"missing {p}: apt-get install -y fonts-noto-color-emoji unicode-data")
    font = ImageFont.truetype(args.font, 109)
    entries = [e for e in parse_emoji_test(args.emoji_test) if e[2] != "Component"]
    groups = list(dict.fromkeys(e[2] for e in entries))
    imgs = []
    meta = {"emoji": [], "name": [], "group": [], "subgroup": [], "base": []}
    skipped = []
    for cps, name, group, sub in entries:
        text = "".join(map(chr, cps))
        big = render(text, font, 128)
        if big is None:
            skipped.append(name)
            continue
        imgs.append(np.asarray(big.resize((64, 64), Image.LANCZOS), dtype=np.uint8))
        meta["emoji"].append(text)
        meta["name"].append(name)
        meta["group"].append(groups.index(group))
        meta["subgroup"].append(sub)
        # skin-tone variants share a base (the sequence without tone modifiers)
        meta["base"].append("-".join(f"{c:X}" for c in cps if c not in SKIN_TONES))
    os.makedirs(args.out, exist_ok=True)
    images = np.stack(imgs)  # (N, 64, 64, 3) uint8
    q = np.round(images.astype(np.float32) * QMAX / 255).astype(np.uint8)  # 7-bit
    buf = io.BytesIO()
    np.save(buf, q, allow_pickle=False)
    with open(os.path.join(args.out, "emoji_64.npy.xz"), "wb") as f:
        f.write(lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ,
                              filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]))
    info = {"source": "Noto Color Emoji (Debian fonts-noto-color-emoji) rendered by scripts/build_emoji.py; "
                      "names from Unicode emoji-test.txt (Debian unicode-data)",
            "unicode_version": "15.0", "image_file": "emoji_64.npy.xz", "quantization_max": QMAX,
            "groups": groups, **meta}
    with open(os.path.join(args.out, "emoji.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False)
    write_notice(os.path.join(args.out, "EMOJI_LICENSE"))
    print(f"{len(meta['name'])} emoji, {len(set(meta['base']))} bases, {len(groups)} groups; "
          f"skipped {len(skipped)}: {skipped[:10]}")
    for fn in sorted(os.listdir(args.out)):
        if fn.startswith("emoji") or fn == "EMOJI_LICENSE":
            print(f"  {fn}: {os.path.getsize(os.path.join(args.out, fn)) / 2**20:.2f} MiB")


def write_notice(path: str):
    apache = open(APACHE, encoding="utf-8").read() if os.path.isfile(APACHE) else \
        "See https://www.apache.org/licenses/LICENSE-2.0\n"
    copyright_text = open(COPYRIGHT, encoding="utf-8").read() if os.path.isfile(COPYRIGHT) else ""
    head = (
        "The images in emoji_32.npz and emoji_64.npz are renderings of the Noto Emoji artwork\n"
        "(https://github.com/googlefonts/noto-emoji), Copyright 2013-2017 Google Inc. and\n"
        "Arjen Nienhuis, licensed under the Apache License, Version 2.0 (the artwork) and\n"
        "drawn through the Noto Color Emoji font file, licensed under the SIL Open Font\n"
        "License 1.1. They were rendered from Debian's fonts-noto-color-emoji package, resized\n"
        "and composited on white by scripts/build_emoji.py (a modification under Apache-2.0 s.4).\n"
        "The captions in emoji.json are CLDR short names from the Unicode emoji-test.txt data\n"
        "file (Unicode License v3, https://www.unicode.org/license.txt).\n\n"
        "=== Debian copyright file of fonts-noto-color-emoji ===\n\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + copyright_text + "\n\n=== Apache License, Version 2.0 ===\n\n" + apache)


if __name__ == "__main__":
    main()
