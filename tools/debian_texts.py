#!/usr/bin/env python3
"""Build the bundled demo texts from Debian's package index.

Reads the Packages indexes that `apt-get update` fetched from Debian's own
archive (deb.debian.org; the same stanzas `apt-cache dumpavail` prints, but
without packages from third-party repositories or only installed locally),
takes each package's synopsis (the first line of its Description field, the
one-line summary written in the package's debian/control), and writes

    OUT/texts.txt      one synopsis a line (the rows the embeddings follow)
    OUT/packages.tsv   row, package, source package, section: where each text
                       came from, so its licence can be looked up

Only the standard library is used. The result depends on the apt lists the
machine has, so the committed files are the record of what was embedded;
this script documents how they were made and can rebuild a similar set.

    python3 tools/debian_texts.py examples/data --rows 20000 --seed 0
"""

import argparse
import glob
import os
import random
import re
import subprocess
import sys

# Synopses that only say which build artefact a package is carry no topic of
# their own; the rest (documentation, development files, ...) are kept.
BOILERPLATE = re.compile(r"transitional|dummy package|debug(ging)? symbols", re.I)


def stanzas(text):
    """Yield each Packages stanza as a dict of its first-line field values."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
            continue
        if line[0] in " \t":
            continue  # a continuation line of a multi-line field
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    if fields:
        yield fields


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="directory to write texts.txt and packages.tsv into")
    ap.add_argument("--rows", type=int, default=20000, help="how many texts to keep (default 20000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    ap.add_argument("--min-chars", type=int, default=20, help="shortest synopsis kept (default 20)")
    ap.add_argument("--max-chars", type=int, default=160, help="longest synopsis kept (default 160)")
    ap.add_argument("--lists", default="/var/lib/apt/lists", help="apt's lists directory (default /var/lib/apt/lists)")
    args = ap.parse_args()

    lists = sorted(glob.glob(os.path.join(args.lists, "deb.debian.org_*_Packages*")))
    # the release first, then -updates and -security, whose newer stanzas win
    lists.sort(key=lambda p: ("-updates_" in p or "-security_" in p))
    if not lists:
        sys.exit(f"debian_texts.py: no deb.debian.org Packages lists in {args.lists}; run apt-get update on Debian")
    latest = {}
    for path in lists:
        try:
            # apt-helper decompresses whatever apt stored (.lz4, .gz, .xz, plain)
            text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True,
                                  capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"debian_texts.py: cannot read {path}: {e}")
        for st in stanzas(text):
            latest[st.get("Package", "")] = st

    seen = set()
    rows = []
    for _, st in sorted(latest.items()):
        syn = " ".join(st.get("Description", "").split())
        if not syn or BOILERPLATE.search(syn):
            continue
        if not (args.min_chars <= len(syn) <= args.max_chars) or len(syn.split()) < 3:
            continue
        key = syn.lower()
        if key in seen:  # one text per distinct synopsis (case-insensitive)
            continue
        seen.add(key)
        pkg = st.get("Package", "")
        src = st.get("Source", pkg).split(" ")[0]  # "Source: name (version)"
        rows.append((pkg, src, st.get("Section", ""), syn))

    if len(rows) < args.rows:
        sys.exit(f"debian_texts.py: only {len(rows)} distinct synopses, fewer than --rows {args.rows}")
    rows = random.Random(args.seed).sample(rows, args.rows)
    rows.sort(key=lambda r: r[0])

    os.makedirs(args.out, exist_ok=True)
    for name, lines in (("texts.txt", [r[3] for r in rows]),
                        ("packages.tsv", ["row\tpackage\tsource\tsection"] +
                         [f"{i}\t{r[0]}\t{r[1]}\t{r[2]}" for i, r in enumerate(rows)])):
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)  # never a half-written file where a whole one stood
    print(f"{len(rows)} texts of {len(seen)} distinct synopses -> {args.out}/texts.txt, packages.tsv")


if __name__ == "__main__":
    main()
