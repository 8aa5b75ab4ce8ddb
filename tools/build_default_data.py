"""Build the bundled German→English corpus from LibreOffice's help pages.

The Debian packages ``libreoffice-help-de`` and ``libreoffice-help-en-us`` (MPL-2.0)
ship the same help pages in both languages; paragraphs carry the same ``id`` in both,
so pairs match by (page, id). The split is by help *module* (Writer, Calc, ...), not at
random: the help reuses templates, and a random split would leak near-copies of test
sentences into training.

Rebuild (needs network access to Debian's package mirror, nothing else)::

    python tools/build_default_data.py --out data/libreoffice-de-en
"""
from __future__ import annotations

import argparse
import glob
import html.parser
import os
import re
import subprocess
import tempfile
from collections import Counter

# Help modules that go to valid/test; everything else is training text.
VALID_MODULES = ("schart",)
TEST_MODULES = ("smath", "sdraw")
MIN_WORDS, MAX_WORDS = 3, 40


class _ParagraphParser(html.parser.HTMLParser):
    """Collects the visible text of every element whose id looks like par_id/hd_id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[str, str] = {}
        self._stack: list[tuple[str, str | None, bool]] = []  # (tag, id, hidden)
        self._texts: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        pid = attrs.get("id")
        if not (pid and re.match(r"^(par|hd)_id", pid)):
            pid = None
        hidden = "hidden" in attrs or bool(self._stack and self._stack[-1][2])
        if tag in ("br", "img", "input", "meta", "link"):
            return
        self._stack.append((tag, pid, hidden))
        if pid:
            self._texts[pid] = []

    def handle_endtag(self, tag):
        while self._stack:
            t, pid, _ = self._stack.pop()
            if pid is not None:
                text = " ".join("".join(self._texts.pop(pid)).split())
                self.paragraphs.setdefault(pid, text)
            if t == tag:
                break

    def handle_data(self, data):
        if self._stack and self._stack[-1][2]:
            return
        for _, pid, _ in self._stack:
            if pid is not None and pid in self._texts:
                self._texts[pid].append(data)


def paragraphs(path: str) -> dict[str, str]:
    parser = _ParagraphParser()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser.paragraphs


def extract(de_root: str, en_root: str):
    """Yield (module, page, id, de, en) for every paragraph present in both languages."""
    for de_path in sorted(glob.glob(os.path.join(de_root, "text", "**", "*.html"), recursive=True)):
        rel = os.path.relpath(de_path, de_root)
        en_path = os.path.join(en_root, rel)
        if not os.path.exists(en_path):
            continue
        de_pars, en_pars = paragraphs(de_path), paragraphs(en_path)
        module = rel.split(os.sep)[1]
        for pid, de in de_pars.items():
            en = en_pars.get(pid)
            if en is None:
                continue
            yield module, rel, pid, de, en


def keep(de: str, en: str) -> bool:
    if de == en:  # untranslated paragraph
        return False
    for text in (de, en):
        n = len(text.split())
        if n < MIN_WORDS or n > MAX_WORDS:
            return False
    return True


def download_and_unpack(workdir: str) -> tuple[str, str]:
    subprocess.run(["apt-get", "download", "libreoffice-help-de", "libreoffice-help-en-us"],
                   cwd=workdir, check=True)
    for deb in glob.glob(os.path.join(workdir, "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(workdir, "root")], check=True)
    base = os.path.join(workdir, "root", "usr", "share", "libreoffice", "help")
    return os.path.join(base, "de"), os.path.join(base, "en-US")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/libreoffice-de-en")
    ap.add_argument("--unpacked", help="folder holding usr/share/libreoffice/help/{de,en-US} already unpacked")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.unpacked:
            base = os.path.join(args.unpacked, "usr", "share", "libreoffice", "help")
            de_root, en_root = os.path.join(base, "de"), os.path.join(base, "en-US")
        else:
            de_root, en_root = download_and_unpack(tmp)
        rows = [r for r in extract(de_root, en_root) if keep(r[3], r[4])]
    splits: dict[str, list] = {"train": [], "valid": [], "test": []}
    seen: set[tuple[str, str]] = set()
    # Held-out modules first so that training drops any pair that also appears there.
    order = sorted(rows, key=lambda r: (r[0] not in TEST_MODULES, r[0] not in VALID_MODULES))
    held_out_sources: set[str] = set()
    for module, page, pid, de, en in order:
        split = "test" if module in TEST_MODULES else "valid" if module in VALID_MODULES else "train"
        if (de, en) in seen or (split == "train" and de in held_out_sources):
            continue
        seen.add((de, en))
        if split != "train":
            held_out_sources.add(de)
        splits[split].append({"id": f"{page}#{pid}", "de": de, "en": en})
    os.makedirs(args.out, exist_ok=True)
    for name, items in splits.items():
        items.sort(key=lambda r: r["id"])
        # Plain TSV, no quoting: a tab never occurs inside a field (whitespace was folded).
        with open(os.path.join(args.out, f"{name}.tsv"), "w", encoding="utf-8", newline="\n") as f:
            f.write("id\tde\ten\n")
            for r in items:
                f.write(f"{r['id']}\t{r['de']}\t{r['en']}\n")
        print(f"{name}: {len(items)} pairs")
    print("modules:", Counter(r[0] for r in rows))


if __name__ == "__main__":
    main()
