"""Regenerate the copied part of the embedded corpus (maintainers only; the output is committed).

    python plugins/mia_corpus/scripts/refresh_data.py

Copies the license texts from a Debian/Ubuntu ``/usr/share/common-licenses`` and decodes
the Zen of Python from the standard library's ``this`` module (stored there rot13-encoded).
Derives the per-file notices of ``data/repeated/`` (the "How to Apply These Terms" appendices
of the Apache-2.0, GPL-3 and GPL-2 texts, dedented) and the Declaration's second paragraph.
The US founding documents under ``data/us/`` and the other ``data/repeated/`` texts are
written out by hand and not touched here (their sources: docs/datasets.md).
"""

import codecs
import shutil
import sys
import textwrap
from pathlib import Path

# Latest version of each license family only: older versions (GPL-1, LGPL-2, MPL-1.1,
# GFDL-1.2) share much of their wording with the newer ones, and the duplicated windows
# would count twice in membership statistics.
LICENSES = ["Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3",
            "MPL-2.0"]
SOURCE = Path("/usr/share/common-licenses")
DATA = Path(__file__).resolve().parent.parent / "mia_corpus" / "data"


def main() -> int:
    (DATA / "licenses").mkdir(parents=True, exist_ok=True)
    for name in LICENSES:
        shutil.copyfile(SOURCE / name, DATA / "licenses" / f"{name}.txt")
    (DATA / "python").mkdir(parents=True, exist_ok=True)
    import this  # noqa: F401  (importing prints the Zen; we decode its source string instead)

    zen = codecs.decode(sys.modules["this"].s, "rot13")
    (DATA / "python" / "zen.txt").write_text(zen.strip() + "\n", encoding="utf-8")
    write_repeated_derivatives()
    return 0


# (file, license, first line, last line) of each per-file notice inside its license text.
NOTICES = [
    ("apache-2.0-notice", "Apache-2.0", "Licensed under the Apache License, Version 2.0 (the",
     "limitations under the License."),
    ("gpl-3-notice", "GPL-3", "This program is free software: you can", "If not, see <https"),
    ("gpl-2-notice", "GPL-2", "This program is free software; you can", "51 Franklin Street"),
]


def _block(text: str, first: str, last: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if first in line)
    end = next(i for i in range(start, len(lines)) if last in lines[i])
    return textwrap.dedent("\n".join(lines[start:end + 1])) + "\n"


def write_repeated_derivatives() -> None:
    """The notices as they stand at the top of source files (no indent), and the Declaration's
    second paragraph, cut from the committed full texts."""
    out = DATA / "repeated"
    out.mkdir(parents=True, exist_ok=True)
    for name, license_name, first, last in NOTICES:
        text = (DATA / "licenses" / f"{license_name}.txt").read_text(encoding="utf-8")
        (out / f"{name}.txt").write_text(_block(text, first, last), encoding="utf-8")
    declaration = (DATA / "us" / "declaration-of-independence.txt").read_text(encoding="utf-8")
    paragraph = next(p for p in declaration.split("\n\n") if p.startswith("We hold these truths"))
    (out / "declaration-paragraph-2.txt").write_text(paragraph.strip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
