"""Regenerate the copied part of the embedded corpus (maintainers only; the output is committed).

    python plugins/mia_corpus/scripts/refresh_data.py

Copies the license texts from a Debian/Ubuntu ``/usr/share/common-licenses`` and decodes
the Zen of Python from the standard library's ``this`` module (stored there rot13-encoded).
The US founding documents under ``data/us/`` are written out by hand and not touched here.
"""

import codecs
import shutil
import sys
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
